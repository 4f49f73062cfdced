"""Fuzz run: every property-based test of a reader (shards, records, the dataset manifest,
configs, and the DICOM, image, ECG, video, audio and ingest-manifest ingesters) with the
hypothesis "fuzz" profile — random, not the suite's fixed cases — and a count of the cases
each one ran. Any exception other than the project's own is a failure.

    .venv/bin/python tools/fuzz.py [--examples 1000]
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/reliability/test_fuzz.py", "tests/test_formats.py", "tests/test_audio.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="cases per test")
    args = parser.parse_args()
    env = {**os.environ, "MMJAX_FUZZ_EXAMPLES": str(args.examples)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "fuzz",
         "--hypothesis-profile=fuzz", "--hypothesis-show-statistics", *FILES],
        cwd=REPO, env=env, capture_output=True, text=True)
    print(result.stdout[-20_000:], result.stderr[-5_000:], sep="\n")
    # Each test's statistics: "path::name:", then per phase "- N passing, M failing, ...".
    counts = []
    for name, block in re.findall(r"::(test_\w+):\n(.*?)(?=\n\S|\Z)", result.stdout, re.S):
        phases = re.findall(r"(\d+) passing, (\d+) failing", block)
        counts.append((name, sum(int(p) for p, _ in phases), sum(int(f) for _, f in phases)))
    for name, passing, failing in counts:
        print(f"{name:45s} {passing:7d} cases, {failing} failing")
    total = sum(p + f for _, p, f in counts)
    print(f"{len(counts)} fuzz tests, {total} generated cases; pytest exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
