"""One run per workdir, and what a resume changes is said, not silently overwritten."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import tiny_config

from mmjax.config import ConfigError
from mmjax.train.lock import LOCK_FILE, STALE_SECONDS, WorkdirLock, WorkdirLocked
from mmjax.train.loop import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_on_a_held_workdir_is_refused_and_the_first_keeps_it(tmp_path):
    first = WorkdirLock(tmp_path).acquire()
    with pytest.raises(WorkdirLocked, match=f"in use by pid {os.getpid()}"):
        WorkdirLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    WorkdirLock(tmp_path).acquire().release()  # free again


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, caplog):
    """A dead pid on this host, or a lock another host stopped refreshing (a preempted
    VM); a live one from another host is refused."""
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    with caplog.at_level(logging.WARNING):
        WorkdirLock(tmp_path).acquire().release()
    assert "is gone" in caplog.text

    lock.write_text(json.dumps({"host": "other-vm", "pid": 1}))
    with pytest.raises(WorkdirLocked, match="pid 1 on other-vm"):
        WorkdirLock(tmp_path).acquire()
    old = time.time() - STALE_SECONDS - 5
    os.utime(lock, (old, old))
    WorkdirLock(tmp_path).acquire().release()


def test_train_refuses_a_held_workdir_and_writes_nothing(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    holder = WorkdirLock(tmp_path).acquire()
    with pytest.raises(WorkdirLocked):
        train(cfg, tmp_path, progress=False, evaluate=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]  # no config, no metrics
    holder.release()


def test_a_resume_says_what_changed_and_refuses_to_go_backwards(tmp_path, smoke_dataset,
                                                                caplog):
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps = 4
    train(cfg, tmp_path, progress=False, evaluate=False)
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end

    cfg.optim.learning_rate *= 2
    with caplog.at_level(logging.WARNING):
        train(cfg, tmp_path, progress=False, evaluate=False)
    assert "optim.learning_rate" in caplog.text and "(was " in caplog.text

    cfg.train.num_steps = 2
    with pytest.raises(ConfigError, match="is at step 4, past train.num_steps=2"):
        train(cfg, tmp_path, progress=False, evaluate=False)


def test_a_workdir_that_cannot_be_written_is_one_clear_error(tmp_path, smoke_dataset):
    """A path under a file stands in for a read-only mount (root writes everywhere)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write to workdir .*file/run"):
        train(tiny_config(smoke_dataset), tmp_path / "file" / "run", progress=False)
