"""Input benchmark: can the data side keep the train step fed?

Measures, in one run: SynthMed writing (patients/s, all modalities), pipeline
examples/s with 0, 1 and 2 worker processes, and the tiny config's train step
consumption rate; prints pipeline / consumption ratios (above 1 = the step never waits).

    .venv/bin/python tools/bench_data.py [--patients 2000] [--batches 30]
"""

import argparse
import tempfile
import time
from pathlib import Path

import jax

from mmjax import config as config_lib
from mmjax.data import pipeline
from mmjax.data.write_synthmed import write_synthmed
from mmjax.train.setup import build, open_input

REPO = Path(__file__).resolve().parents[1]


def bench_writing(out: Path, patients: int, workers: int) -> float:
    start = time.perf_counter()
    write_synthmed(out, patients, patients // 10, image_size=64, frames=16, workers=workers,
                   progress=False)
    return patients / (time.perf_counter() - start)


def bench_pipeline(cfg, batches: int, workers: int) -> float:
    tokenizer = pipeline.load_tokenizer(cfg.data)
    source, transform = pipeline.open_split(cfg.data, "train", tokenizer)
    dataset = pipeline.train_batches(source, transform, cfg.train.batch_size, seed=0)
    iterator = pipeline.iterate(dataset, 0, workers)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * cfg.train.batch_size / (time.perf_counter() - start)


def bench_consumption(cfg, steps: int) -> float:
    """Examples/s the tiny config's train step consumes on this machine's devices."""
    data = open_input(cfg)
    run = build(cfg, data.define_model(cfg), data.batches[0])
    batch = run.to_device(data.batches[0])
    step, _ = run.compile(batch)
    state, metrics = step(run.state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return steps * cfg.train.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--writer-workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        rate = bench_writing(Path(tmp) / "full", args.patients, args.writer_workers)
        print(f"synthmed writing: {rate:,.0f} patients/s with {args.writer_workers} workers "
              f"(64 px image, 16-frame echo, 12-lead ECG, report)")
        data = Path(tmp) / "demo"  # what `make demo` trains on
        write_synthmed(data, args.patients, args.patients // 10, image_size=32,
                       modalities=("image", "report"), workers=args.writer_workers,
                       progress=False)
        cfg = config_lib.load(REPO / "experiments" / "tiny_cpu.py", [f"data.path={data}"])
        consumption = bench_consumption(cfg, steps=10)
        print(f"tiny_cpu train step consumes {consumption:,.0f} examples/s "
              f"({jax.device_count()} device(s))")
        for workers in (0, 1, 2):
            produced = bench_pipeline(cfg, args.batches, workers)
            print(f"pipeline, {workers} worker(s): {produced:,.0f} examples/s = "
                  f"{produced / consumption:.1f}x consumption")


if __name__ == "__main__":
    main()
