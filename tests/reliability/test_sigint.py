"""Ctrl-C (SIGINT) during `mmjax train` is handled like SIGTERM: at the next step a
checkpoint is saved, one line says so, and the process exits 130 (the shell's status for
SIGINT) without a traceback; rerunning the same command resumes from that step."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import logged_steps, train_smoke

from mmjax.train import metrics as metrics_lib
from mmjax.train.checkpoint import read_fields

STEPS = 40


def _start(workdir: Path, dataset: Path) -> subprocess.Popen:
    # No scheduled checkpoint before the end: the only one a resume can find is Ctrl-C's.
    return train_smoke(workdir, dataset, f"train.num_steps={STEPS}", "train.log_every=2",
                       f"train.checkpoint_every={STEPS}")


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_rerun_resumes(tmp_path, smoke_dataset):
    workdir = tmp_path / "run"
    process = _start(workdir, smoke_dataset)
    deadline = time.time() + 300
    while logged_steps(workdir) < 4:
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"the run ended or stalled first:\n{process.communicate()[0]}")
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    match = re.search(r"interrupted: saved a checkpoint at step (\d+); rerun the same "
                      r"command to resume", output)
    assert match, output
    step = int(match.group(1))
    assert 4 <= step < STEPS
    assert read_fields(workdir / "checkpoints", ("params",))[1] == step

    rerun = _start(workdir, smoke_dataset)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output
    assert f"resumed from step {step} of {workdir}" in output
    assert f"step {STEPS} of {STEPS}" in output
    rows = metrics_lib.train_rows(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(2, STEPS + 1, 2))  # each step once
