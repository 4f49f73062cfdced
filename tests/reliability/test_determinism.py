"""Two independent training processes give the same numbers: each its own compilation
cache, both at once on the same cores (each loading the other), every objective the demo
pretrains with (contrastive, report generation, MAE). This is what makes the README's demo
numbers reproducible (issue 23: they had been written by an earlier code version)."""

import subprocess
from pathlib import Path

from conftest import train_smoke

from mmjax.train import metrics as metrics_lib

# Measured, not computed: these vary with the machine's load.
TIMING_KEYS = ("examples_per_sec", "data_wait_fraction", "mfu")


def _start(workdir: Path, dataset: Path, cache: Path) -> subprocess.Popen:
    return train_smoke(workdir, dataset, "train.num_steps=6", "train.log_every=1",
                       "train.batch_size=32", "objectives.caption=0.5", "objectives.mae=0.5",
                       "objectives.mae_modalities=[image]", MMJAX_COMPILATION_CACHE=str(cache))


def test_two_fresh_processes_under_load_log_identical_rows(tmp_path, smoke_dataset):
    runs = [_start(tmp_path / f"run{i}", smoke_dataset, tmp_path / f"cache{i}")
            for i in range(2)]
    for process in runs:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-2000:]
    rows = [[{k: v for k, v in row.items() if k not in TIMING_KEYS}
             for row in metrics_lib.train_rows(tmp_path / f"run{i}" / "metrics.jsonl")]
            for i in range(2)]
    assert len(rows[0]) == 6
    assert {"loss/caption", "loss/mae/image", "loss/contrastive/image-report"} <= set(rows[0][0])
    assert rows[0] == rows[1]  # every loss, gradient norm and learning rate, to the bit
