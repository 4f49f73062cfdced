"""Evaluators by name, in the big_vision manner: each takes an EvalContext and returns a
JSON-able dict of metrics; the experiment lists the names it wants (eval.evaluators).

An evaluator may also declare what it needs from the config, so a run that cannot
evaluate is refused before it trains, not after.
"""

import dataclasses
import logging
import math
import time
from collections.abc import Callable

from mmjax.config import Config, ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluator:
    name: str
    run: Callable  # (EvalContext) -> dict
    check: Callable  # (Config) -> None, or raises ConfigError saying what is missing


EVALUATORS: dict[str, Evaluator] = {}


def register(name: str, check: Callable = lambda cfg: None):
    def decorate(fn):
        EVALUATORS[name] = Evaluator(name, fn, check)
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


def resolve(cfg: Config, names=None) -> list[Evaluator]:
    """The evaluators `names` (default eval.evaluators), checked against the config."""
    _load_all()
    names = cfg.eval.evaluators if names is None else names
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise ConfigError(f"eval.evaluators: unknown {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(EVALUATORS))}")
    evaluators = [EVALUATORS[n] for n in names]
    for evaluator in evaluators:
        evaluator.check(cfg)
    return evaluators


def requires_modalities(name: str, *groups: tuple[str, ...]) -> Callable:
    """A check: the data has report and at least one modality of each group."""

    def check(cfg: Config) -> None:
        have = set(cfg.data.modalities)
        for group in groups:
            if not have & set(group):
                raise ConfigError(f"evaluator '{name}' needs data.modalities to include "
                                  f"{' or '.join(group)}")

    return check


def run_all(ctx, evaluators: list[Evaluator]) -> dict[str, dict]:
    """Runs each evaluator, writes <out_dir>/<name>.json and returns {name: metrics}."""
    results = {}
    for evaluator in evaluators:
        start = time.perf_counter()
        metrics = _defined(evaluator.run(ctx))
        log.info("eval %s at step %d: %.1f s", evaluator.name, ctx.step,
                 time.perf_counter() - start)
        ctx.save_json(f"{evaluator.name}.json", {"step": ctx.step, "metrics": metrics})
        results[evaluator.name] = metrics
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
