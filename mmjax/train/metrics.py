"""Training logs: one JSON object per logged step in workdir/metrics.jsonl."""

import json
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = self.path.open("a")

    def write(self, step: int, metrics: dict) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


class Throughput:
    """Examples per second between successive calls to `measure`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._time, self._examples = time.perf_counter(), 0

    def add(self, examples: int) -> None:
        self._examples += examples

    def elapsed(self) -> float:
        return max(time.perf_counter() - self._time, 1e-9)

    def measure(self) -> float:
        rate = self._examples / self.elapsed()
        self.reset()
        return rate
