"""One run per workdir, and what a resume changes is said, not silently overwritten."""

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import tiny_config

from mmjax import trained
from mmjax.config import ConfigError
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.write_synthmed import write_synthmed
from mmjax.train import pins
from mmjax.train.lock import LOCK_FILE, STALE_SECONDS, WorkdirLock, WorkdirLocked
from mmjax.train.loop import train
from mmjax.train.setup import open_input, prepare_workdir

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


def test_a_workdir_pins_its_tokenizer_and_shards(tmp_path):
    """A dataset regenerated at the same path (other shards) or given another tokenizer is
    refused on resume; evaluation reads the workdir's own tokenizer copy."""
    data, workdir = tmp_path / "data", tmp_path / "run"

    def dataset(seed: int):
        write_synthmed(data, 160, 32, seed=seed, image_size=16, modalities=("image", "report"),
                       vocab_size=128, workers=1, progress=False)

    dataset(0)
    cfg = tiny_config(data)
    cfg.train.num_steps, cfg.train.batch_size, cfg.eval.batch_size = 2, 16, 16
    train(cfg, workdir, progress=False, evaluate=False)
    original = (data / "tokenizer.json").read_text()
    pinned = json.loads((workdir / pins.PINS_FILE).read_text())
    assert pinned["shards"].keys() == {"train", "eval"}
    assert (workdir / pins.TOKENIZER_FILE).is_file()

    vocab = json.loads(original)
    words = vocab["model"]["vocab"]
    first, last = max(words, key=words.get), min(words, key=words.get)
    words[first], words[last] = words[last], words[first]
    (data / "tokenizer.json").write_text(json.dumps(vocab))  # the same words, other ids
    cfg.train.num_steps = 4
    with pytest.raises(ConfigError, match="another dataset .*its tokenizer differs"):
        train(cfg, workdir, progress=False, evaluate=False)
    assert trained.load(workdir).tokenizer.to_str() == \
        tokenizer_lib.load(workdir / pins.TOKENIZER_FILE).to_str()
    assert trained.load(workdir).tokenizer.get_vocab() == json.loads(original)["model"]["vocab"]

    dataset(1)  # regenerated: other examples, perhaps the same vocabulary
    (data / "tokenizer.json").write_text(original)
    with pytest.raises(ConfigError, match="another dataset .*shards of split 'eval' differ"):
        train(cfg, workdir, progress=False, evaluate=False)
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 2


def test_a_trained_workdir_refuses_another_model_but_an_aborted_first_run_does_not(
        tmp_path, smoke_dataset, caplog):
    """The model and data keys are fixed by the first checkpoint, not by the first attempt:
    a run stopped before saving (a typo, a crash while compiling) leaves a config.json that
    must not refuse the corrected command."""
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps = 2
    aborted, other = tmp_path / "aborted", dataclasses.replace(cfg.model, embed_dim=24)
    prepare_workdir(cfg, aborted, open_input(cfg).tokenizer)  # what the failed run left
    fixed = dataclasses.replace(cfg, model=other)
    with caplog.at_level(logging.INFO):
        train(fixed, aborted, progress=False, evaluate=False)
    assert "has no checkpoint yet" in caplog.text
    assert json.loads((aborted / "config.json").read_text())["model"]["embed_dim"] == 24

    with pytest.raises(ConfigError, match=r"different config for model.embed_dim; use a new "):
        train(dataclasses.replace(fixed, model=cfg.model), aborted, progress=False,
              evaluate=False)


def test_paths_are_stored_absolute_so_any_directory_evaluates(tmp_path, smoke_dataset,
                                                              monkeypatch):
    """A relative data.path is resolved when the run starts: `mmjax eval` from another
    directory reads the same dataset; an older config.json's relative path still resumes."""
    monkeypatch.chdir(smoke_dataset.parent)
    cfg = tiny_config(smoke_dataset.name)
    cfg.train.num_steps = 2
    workdir = tmp_path / "run"
    train(cfg, workdir, progress=False, evaluate=False)
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["data"]["path"] == str(smoke_dataset.resolve())

    monkeypatch.chdir(tmp_path)
    assert trained.load(workdir).cfg.data.path == str(smoke_dataset.resolve())

    stored["data"]["path"] = smoke_dataset.name  # as versions before 0.2 wrote it
    (workdir / "config.json").write_text(json.dumps(stored))
    monkeypatch.chdir(smoke_dataset.parent)
    cfg.train.num_steps = 3
    assert train(cfg, workdir, progress=False, evaluate=False)["step"] == 3
