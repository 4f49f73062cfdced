"""Training logs: one JSON object per logged step in workdir/metrics.jsonl, the same
scalars as TensorBoard events, and the model FLOP utilisation (MFU) of a step."""

import json
import re
import time
from pathlib import Path

from mmjax import storage

# Dense peak FLOP/s per device in the training dtype (bfloat16), from vendor data sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
}


def peak_flops(device_kind: str, configured_tflops: float = 0.0) -> float | None:
    """Per-device peak FLOP/s: the configured value, else the table's, else None (CPU)."""
    if configured_tflops:
        return configured_tflops * 1e12
    for kind, flops in PEAK_FLOPS.items():
        if device_kind.startswith(kind):
            return flops
    return None


def compiled_step_flops(compiled) -> float | None:
    """FLOPs per device of one compiled step, from XLA's cost analysis of the program
    (so every objective, the backward pass and the optimizer are counted)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class MetricsLog:
    """Appends rows to metrics.jsonl. Resuming from the checkpoint of `resume_from` first
    drops the rows of later steps (their steps are about to run again, after a kill or a
    preemption) and a row torn by a kill mid-write, so each step has one row."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None,
                 resume_from: int | None = None):
        self.path = storage.path(path)
        if resume_from is not None and self.path.is_file():
            _keep_rows_until(self.path, resume_from)
        self._file = storage.AppendLog(self.path)
        self._tensorboard = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter  # imported only when asked for

            self._tensorboard = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, metrics: dict) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tensorboard is not None:
            for name, value in metrics.items():  # TensorBoard allows [\w./-] in tags
                self._tensorboard.add_scalar(re.sub(r"[^\w./-]", "_", name), value, step)
            self._tensorboard.flush()

    def flush(self) -> None:
        """Called after each checkpoint: a resume relogs only rows after it."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _keep_rows_until(path, step: int) -> None:
    """Rewrites `path` (atomically: a kill leaves the old or the new file; a bucket object
    is written whole anyway) with the whole rows of steps <= `step`."""
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last row, torn by a kill
        if line.endswith("\n") and row.get("step", 0) <= step:
            kept.append(line)
    if storage.is_bucket(path):
        path.write_text("".join(kept))
        return
    staged = path.with_suffix(".jsonl.tmp")
    staged.write_text("".join(kept))
    staged.replace(path)


def read(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in storage.path(path).read_text().splitlines() if line]


def train_rows(path: str | Path) -> list[dict]:
    """The training steps' rows; evaluations write rows of 'eval/...' metrics instead."""
    return [row for row in read(path) if "loss" in row]


class Throughput:
    """Examples per second between successive calls to `measure`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._time, self._examples, self._steps = time.perf_counter(), 0, 0

    def add(self, examples: int) -> None:
        self._examples += examples
        self._steps += 1

    def elapsed(self) -> float:
        return max(time.perf_counter() - self._time, 1e-9)

    def measure(self) -> tuple[float, float]:
        """(examples per second, seconds per step) since the last call."""
        elapsed = self.elapsed()
        rates = self._examples / elapsed, elapsed / max(self._steps, 1)
        self.reset()
        return rates
