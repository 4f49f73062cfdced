"""`mmjax train` killed with SIGKILL mid-step and mid-checkpoint-write, then stopped with
SIGTERM, then rerun: the pieced-together run equals one uninterrupted run, bit for bit."""

import random
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import logged_steps, train_smoke

from mmjax.train import metrics as metrics_lib
from mmjax.train.checkpoint import read_fields

STEPS = 48
def _start(workdir: Path, dataset: Path) -> subprocess.Popen:
    return train_smoke(workdir, dataset, f"train.num_steps={STEPS}", "train.log_every=2",
                       "train.checkpoint_every=4")


def _writing_checkpoint(workdir: Path) -> bool:
    """Orbax writes a step into a temporary folder and renames it when complete."""
    folder = workdir / "checkpoints"
    return folder.is_dir() and any("tmp" in p.name for p in folder.iterdir())


def _wait_for(process: subprocess.Popen, condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"the run ended or stalled first:\n{process.communicate()[0]}")
        time.sleep(0.005)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def test_killed_and_preempted_runs_resume_bit_identically(tmp_path, smoke_dataset):
    rng = random.Random(0)
    reference = tmp_path / "straight"
    straight = _start(reference, smoke_dataset)
    assert straight.wait(timeout=600) == 0, straight.communicate()[0]

    workdir = tmp_path / "interrupted"
    # 1. SIGKILL during the training steps, at a random step past the first checkpoint.
    process = _start(workdir, smoke_dataset)
    kill_after = rng.randrange(6, 16)
    _wait_for(process, lambda: logged_steps(workdir) >= kill_after)
    time.sleep(rng.uniform(0, 0.2))
    _kill(process)
    # 2. SIGKILL while an asynchronous checkpoint is being written (retried until a write
    #    was caught in flight: its temporary folder is left behind).
    for _ in range(5):
        process = _start(workdir, smoke_dataset)
        resumed_at = logged_steps(workdir)
        _wait_for(process, lambda after=resumed_at: logged_steps(workdir) > after
                  and _writing_checkpoint(workdir))
        _kill(process)
        if _writing_checkpoint(workdir):
            break
    else:
        pytest.fail("no checkpoint write was caught in flight in 5 tries")
    # 3. SIGTERM: a checkpoint, a message and a clean exit.
    process = _start(workdir, smoke_dataset)
    resumed_at = logged_steps(workdir)
    _wait_for(process, lambda: logged_steps(workdir) >= resumed_at + rng.randrange(2, 6))
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert "SIGTERM: saved a checkpoint at step" in output
    # 4. Rerun to the end.
    process = _start(workdir, smoke_dataset)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output

    expected, step = read_fields(reference / "checkpoints", ("params", "opt_state"))
    pieced, pieced_step = read_fields(workdir / "checkpoints", ("params", "opt_state"))
    assert step == pieced_step == STEPS
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(pieced), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [metrics_lib.train_rows(w / "metrics.jsonl") for w in (reference, workdir)]
    assert [r["step"] for r in rows[1]] == list(range(2, STEPS + 1, 2))  # one row per step
    assert [r["loss"] for r in rows[1]] == [r["loss"] for r in rows[0]]
