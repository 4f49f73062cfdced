"""One run per workdir: an exclusive lock file holding the holder's host and pid.

Two `mmjax train` on one workdir would interleave their metrics and replace each other's
checkpoints. The lock is created atomically (O_EXCL); a lock whose process is gone (same
host, dead pid) or that its holder stopped refreshing (another host, older than
STALE_SECONDS: a preempted VM) is taken over with a message.
"""

import json
import logging
import os
import socket
import time
from pathlib import Path

from mmjax.config import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
STALE_SECONDS = 600.0  # a live holder refreshes its lock far more often than this
REFRESH_SECONDS = 30.0


class WorkdirLocked(ConfigError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class WorkdirLock:
    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self.holder = {"host": socket.gethostname(), "pid": os.getpid()}
        self._refreshed = 0.0

    def _stale_reason(self) -> str | None:
        """Why the existing lock may be taken over, or None when its holder is live."""
        try:
            holder = json.loads(self.path.read_text())
            host, pid = holder["host"], int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return "it is unreadable"
        if host == self.holder["host"]:
            return None if _alive(pid) else f"process {pid} on {host} is gone"
        age = time.time() - self.path.stat().st_mtime
        if age > STALE_SECONDS:
            return f"{host} (pid {pid}) has not refreshed it for {age:.0f} s"
        return None

    def acquire(self) -> "WorkdirLock":
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                reason = self._stale_reason()
                if reason is None:
                    holder = json.loads(self.path.read_text())
                    raise WorkdirLocked(
                        f"workdir {self.path.parent} is in use by pid {holder['pid']} on "
                        f"{holder['host']}; use another --workdir, or stop that run") from None
                log.warning("taking over the lock of %s: %s", self.path.parent, reason)
                self.path.unlink(missing_ok=True)
                continue
            except OSError as e:
                raise ConfigError(f"cannot write to workdir {self.path.parent}: "
                                  f"{e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder, f)
            self._refreshed = time.monotonic()
            return self
        raise WorkdirLocked(f"workdir {self.path.parent}: another run took the lock first")

    def refresh(self) -> None:
        """Shows other hosts the holder is alive; cheap enough to call every step."""
        if time.monotonic() - self._refreshed > REFRESH_SECONDS:
            os.utime(self.path)
            self._refreshed = time.monotonic()

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()) == self.holder:
                self.path.unlink()
        except (OSError, ValueError):
            pass
