"""Parameters, counted from the one model definition training initialises
(mmjax/nn/build.py), so the count is exactly what training creates for the config: its
objectives decide which heads and decoders exist."""

import math

import flax.linen as nn
import jax
import numpy as np

from mmjax.config import Config
from mmjax.nn import build
from mmjax.objectives.compose import LOG_VARIANCES, Vocab
from mmjax.plan.shapes import InputShapes, example_batch

# Top-level parameters shown in one row of the plan; every other name is its own row.
GROUPS = {"logit_scale": "contrastive", "logit_bias": "contrastive", "diagnosis": "heads",
          "risk": "heads", "matching": "heads", "mlm": "heads", "report_decoder": "decoders",
          LOG_VARIANCES: "weighting"}
GROUP_PREFIXES = {"proj_": "projections", "mae_decoders_": "decoders", "memory_": "decoders"}


def definition(cfg: Config, shapes: InputShapes) -> build.ModelDef:
    """The model training defines for a dataset of `shapes`. Class weights only scale the
    diagnosis loss, so a uniform prevalence stands in for the dataset's."""
    prevalence = (np.full(shapes.num_labels, 0.5, np.float32)
                  if cfg.objectives.class_weights else None)
    return build.define(cfg, Vocab(shapes.vocab_size), shapes.num_labels, prevalence,
                        shapes.audio_rate_hz)


def abstract_variables(cfg: Config, shapes: InputShapes):
    """(the definition, an example batch, the boxed variables init creates, as shapes)."""
    model = definition(cfg, shapes)
    batch = example_batch(shapes, tuple(cfg.data.modalities))
    return model, batch, model.abstract(batch)


def size(tree) -> int:
    """Scalars in a tree of arrays or shapes."""
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(nn.meta.unbox(tree)))


def module_params(cfg: Config, shapes: InputShapes) -> dict[str, int]:
    """Parameters per top-level module ('encoders_image', 'report_decoder', ...)."""
    params = abstract_variables(cfg, shapes)[2]["params"]
    return {name: size(tree) for name, tree in params.items()}


def group(name: str) -> str:
    for prefix, row in GROUP_PREFIXES.items():
        if name.startswith(prefix):
            return row
    return GROUPS.get(name, name)


def count_params(cfg: Config, shapes: InputShapes) -> dict[str, int]:
    """Parameters per row of the plan (modules grouped by GROUPS) and in `total`."""
    counts = {}
    for name, count in module_params(cfg, shapes).items():
        counts[group(name)] = counts.get(group(name), 0) + count
    counts["total"] = sum(counts.values())
    return counts
