"""Objectives by name. Each file of this package registers one `Objective`: the losses
it adds, what it encodes and the function that computes them; compose.py runs the
enabled ones. Adding an objective is one file here and its weight field in
ObjectivesConfig (a weight of 0 turns it off; its position there orders the losses); the
modalities it needs are a rule of config.validate (mmjax/config/rules.py), which checks
them when a config loads, before any data is read."""

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

from mmjax.config import ObjectivesConfig


def pair(text: str) -> tuple[str, str]:
    """'image-report' -> ('image', 'report'); config validation checks the form."""
    a, b = text.split("-")
    return a, b


def _none(cfg: ObjectivesConfig, modalities) -> tuple[str, ...]:
    return ()


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective; its weight is the config field objectives.<name>.

    `terms(forward)` runs inside the model's forward (compose.Forward) and returns a
    (total, count) term per loss, which add up exactly across devices and micro-batches.
    `batch_loss(out, kernel)` is for losses that couple the whole global batch (contrastive):
    it runs on the forward's embeddings with the strategy's collective kernel.
    """

    name: str
    losses: Callable[[ObjectivesConfig], tuple[str, ...]] = None  # default: (name,)
    terms: Callable | None = None
    batch_loss: Callable | None = None
    encodes: Callable = _none  # (cfg, data modalities) -> modalities encoded for it once
    uses_fusion: bool = False  # reads the fused vector (needs every modality encoded)

    def loss_names(self, cfg: ObjectivesConfig) -> tuple[str, ...]:
        return self.losses(cfg) if self.losses else (self.name,)


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    OBJECTIVES[objective.name] = objective
    return objective


def _load_all() -> None:
    """Imports every module of this package; the objective modules register themselves."""
    package = importlib.import_module("mmjax.objectives")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"mmjax.objectives.{info.name}")


def enabled(cfg: ObjectivesConfig) -> list[Objective]:
    """The objectives with a non-zero weight, in ObjectivesConfig's field order."""
    _load_all()
    return [OBJECTIVES[f.name] for f in dataclasses.fields(cfg)
            if f.name in OBJECTIVES and getattr(cfg, f.name)]
