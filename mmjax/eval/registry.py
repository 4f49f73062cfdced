"""Evaluators by kind, in the big_vision manner: each is fn(ctx, run) -> a JSON-able dict
of metrics, reading its options (`run.options`, the config's eval.<kind> section) and
split (`run.split`) from the EvalRun. The experiment lists the runs it wants in
eval.evaluators, as `kind` or `kind@split`; a kind may appear twice, on two splits.

What an evaluator needs of the config is checked with the rest of it
(mmjax/config/rules.py), so a run that cannot evaluate is refused before it trains.
"""

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from mmjax import config as config_lib

log = logging.getLogger(__name__)

EVALUATORS: dict[str, Callable] = {}  # kind -> fn(EvalContext, EvalRun) -> dict


def register(kind: str):
    def decorate(fn):
        EVALUATORS[kind] = fn
        return fn

    return decorate


def _load_all() -> None:
    """Imports the evaluator modules, which register themselves."""
    from mmjax.eval import (  # noqa: F401
        diagnosis,
        generation,
        probe,
        reconstruction,
        retrieval,
        zeroshot,
    )

    if missing := set(config_lib.KINDS) - set(EVALUATORS):
        raise RuntimeError(f"eval sections without an evaluator: {sorted(missing)}")


@dataclasses.dataclass(frozen=True, eq=False)
class EvalRun:
    """One entry of eval.evaluators, resolved: its results go under `name`."""

    name: str  # 'retrieval' or 'retrieval@train'
    kind: str
    split: str  # the split in the name, else the section's, else data.eval_split
    every: int  # also every N training steps (0: only after the last)
    options: Any  # the eval.<kind> section
    fn: Callable = dataclasses.field(repr=False)

    def run(self, ctx) -> dict:
        return self.fn(ctx, self)

    def due(self, step: int, final: bool = False) -> bool:
        """Whether it runs after training step `step` (`final`: the run's last step)."""
        return final or (self.every > 0 and step % self.every == 0)

    def file(self, suffix: str) -> str:
        """A file name of this run's own, e.g. 'zeroshot@train_image.npz' for '_image.npz'."""
        return f"{self.name}{suffix}"


def due(run: EvalRun, step: int, final: bool = False) -> bool:
    return run.due(step, final)


def resolve(cfg: config_lib.Config, names: Sequence[str] | None = None) -> list[EvalRun]:
    """The runs `names` (default eval.evaluators), with the whole config validated."""
    _load_all()
    config_lib.validate(cfg)
    if names is not None:
        config_lib.check_evaluators(cfg, tuple(names), "--evals")
    runs = []
    for name in cfg.eval.evaluators if names is None else names:
        kind, split = config_lib.parse_name(name)
        options = getattr(cfg.eval, kind)
        runs.append(EvalRun(name, kind, split or options.split or cfg.data.eval_split,
                            options.every, options, EVALUATORS[kind]))
    return runs


def run_all(ctx, runs: Sequence[EvalRun]) -> dict[str, dict]:
    """Runs each, writes <out_dir>/<name>.json and returns {name: metrics}."""
    results = {}
    for run in runs:
        start = time.perf_counter()
        metrics = _defined(run.run(ctx))
        log.info("eval %s on %s at step %d: %.1f s", run.name, run.split, ctx.step,
                 time.perf_counter() - start)
        ctx.save_json(run.file(".json"), {"step": ctx.step, "split": run.split,
                                          "metrics": metrics})
        results[run.name] = metrics
    return results


def _defined(value):
    """NaN (an AUC or F1 without both classes) as None, which JSON can hold."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defined(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def scalars(results: dict[str, dict]) -> dict[str, float]:
    """The numeric leaves as 'eval/<name>/<path>' for metrics.jsonl and TensorBoard."""
    flat = {}

    def visit(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(inner, f"{path}/{key}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[path] = float(value)

    for name, metrics in results.items():
        visit(metrics, f"eval/{name}")
    return flat
