"""Where files live: local paths, or bucket URLs (gs://, s3://) through etils.epath.

Reading and writing whole files, listing and checkpoints (orbax writes buckets natively)
work alike on both. What buckets lack — appending to an object, atomic renames — is
handled by the one writer that needs it (`AppendLog`). gs:// needs `pip install
mmjax[gcs]` (gcsfs); s3:// needs s3fs. Local paths stay pathlib.Path, as before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mmjax.errors import ConfigError

if TYPE_CHECKING:
    from etils import epath

BUCKET_SCHEMES = ("gs://", "s3://")


def path(location: str | Path, what: str = "path") -> Path | epath.Path:
    """A local path, or an epath.Path for a bucket URL (pathlib would turn gs://b/x into
    gs:/b/x); other URLs are refused by name."""
    text = str(location)
    if text.startswith(BUCKET_SCHEMES):
        from etils import epath  # only for buckets: the export loader has no etils

        return epath.Path(text)
    if "://" in text:
        raise ConfigError(f"{what} {text}: only local paths, gs:// and s3:// are supported")
    return Path(text)


def is_bucket(location) -> bool:
    return str(location).startswith(BUCKET_SCHEMES)


def absolute(location: str | Path) -> Path | epath.Path:
    """The path made absolute; bucket URLs already are."""
    p = path(location)
    return p if is_bucket(p) else p.absolute()


class AppendLog:
    """A text file appended to line by line. Locally an open file, flushed per line; in a
    bucket, where an object can only be written whole, the text is kept and the object
    rewritten at most every `upload_every_s` seconds, on flush() and on close."""

    def __init__(self, location, upload_every_s: float = 30.0):
        self.path = path(location)
        self._bucket = is_bucket(self.path)
        if self._bucket:
            self._text = self.path.read_text() if self.path.exists() else ""
            self._uploaded, self._every = time.monotonic(), upload_every_s
            self._dirty = False  # a process that never writes never overwrites the object
        else:
            self._file = self.path.open("a")

    def write(self, line: str) -> None:
        if not self._bucket:
            self._file.write(line)
            self._file.flush()
            return
        self._text += line
        self._dirty = True
        if time.monotonic() - self._uploaded >= self._every:
            self.flush()

    def flush(self) -> None:
        """Makes every line written so far durable (a bucket object is rewritten)."""
        if self._bucket and self._dirty:
            self.path.write_text(self._text)
            self._uploaded, self._dirty = time.monotonic(), False

    def close(self) -> None:
        self.flush()
        if not self._bucket:
            self._file.close()
