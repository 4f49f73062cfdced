"""Soak test: `mmjax train` on the smoke config for --minutes, with periodic checkpoints
and held-out evals, sampling the resident memory (RSS) of the process and its data workers.
After the warm-up (compiles, caches, first checkpoint and eval), RSS should stay flat: the
slope is printed in MiB per hour with the range. Not part of the test suite.

    .venv/bin/python tools/soak.py [--minutes 30] [--warmup 5]
"""

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def tree_rss_mib(pid: int) -> float:
    """RSS of `pid` and its descendants (data workers), from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # a worker that just ended
    return total / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5, help="minutes left out of the fit")
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="mmjax_soak_"))
    dataset = base / "data"
    if not (dataset / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "mmjax.cli", "data", "synthmed", "--patients",
                        "2000", "--eval-patients", "128", "--image-size", "32",
                        "--modalities", "image,report", "--out", str(dataset)], check=True)
    settings = [f"data.path={dataset}", "train.num_steps=100000000", "train.log_every=50",
                "train.checkpoint_every=500", "eval.retrieval.every=1000", "data.workers=1"]
    command = [sys.executable, "-m", "mmjax.cli", "train", "--no-progress", "--config",
               str(REPO / "experiments" / "smoke_cpu.py"), "--workdir", str(base / "run"),
               *(a for s in settings for a in ("--set", s))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    start, samples = time.time(), []
    while time.time() - start < args.minutes * 60 and process.poll() is None:
        samples.append((time.time() - start, tree_rss_mib(process.pid)))
        time.sleep(args.every)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=300)
    minutes, rss = np.array(samples).T
    minutes /= 60
    steady = minutes >= args.warmup
    slope = np.polyfit(minutes[steady], rss[steady], 1)[0] * 60 if steady.sum() > 2 else None
    rows = [json.loads(line) for line in (base / "run" / "metrics.jsonl").open()]
    steps = max((r["step"] for r in rows if "loss" in r), default=0)
    print(f"{minutes[-1]:.1f} min, {steps} steps, {len(samples)} samples; exit {code}")
    print(f"RSS at warm-up end {rss[steady][0]:.0f} MiB, last {rss[-1]:.0f} MiB, "
          f"steady range {rss[steady].min():.0f}-{rss[steady].max():.0f} MiB")
    if slope is not None:
        print(f"steady slope {slope:+.1f} MiB/hour")
    return code


if __name__ == "__main__":
    sys.exit(main())
