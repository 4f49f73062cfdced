"""Multi-label diagnosis from the fused vector: class-weighted BCE or focal loss."""

import jax
import jax.numpy as jnp

from mmjax.objectives.registry import Objective, register
from mmjax.objectives.terms import term


def positive_weights(prevalence, max_weight=100.0):
    """Per-class positive weights (1 - p) / p for the prevalences p of the train split.

    Weighting each positive by this balances a class's positives against its
    negatives in BCE, so rare findings are not learnt as "always absent". Clipped to
    [1 / max_weight, max_weight]: a class absent from (or present in every example of)
    the split gets a bounded weight, never inf or 0.
    """
    p = jnp.asarray(prevalence, jnp.float32)
    return jnp.clip((1.0 - p) / p, 1.0 / max_weight, max_weight)


def binary_cross_entropy(logits, targets, positive_weight=None):
    """-[w y log sigmoid(x) + (1 - y) log sigmoid(-x)], from log-sigmoids so that
    confident logits stay finite."""
    positive = targets * jax.nn.log_sigmoid(logits)
    if positive_weight is not None:
        positive = positive_weight * positive
    return -(positive + (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def diagnosis_loss(logits, labels, has_labels, kind="bce", positive_weight=None, gamma=2.0):
    """Multi-label loss over every class of the labelled examples; count = labelled
    examples x classes.

    "focal" (Lin et al. 2017) scales each class's BCE by (1 - p_t)^gamma, p_t the
    probability given to the true 0/1 label, so well-classified easy cases fade; at
    gamma 0 it is BCE. `positive_weight` [F] (positive_weights) applies to both.
    """
    logits, labels = logits.astype(jnp.float32), labels.astype(jnp.float32)
    losses = binary_cross_entropy(logits, labels, positive_weight)
    if kind == "focal":
        # (1 - p_t)^gamma as exp(gamma log sigmoid(-z x)), z = +-1: finite gradients even
        # where 1 - p_t underflows to 0, which x ** gamma lacks (NaN at 0 ** 0).
        sign = 2.0 * labels - 1.0
        losses = jnp.exp(gamma * jax.nn.log_sigmoid(-sign * logits)) * losses
    return term(losses, jnp.broadcast_to(has_labels[:, None], losses.shape))


def _terms(f) -> dict:
    weight = (None if f.setup.positive_weight is None
              else jnp.asarray(f.setup.positive_weight, jnp.float32))
    return {"diagnosis": diagnosis_loss(
        f.module.diagnosis(f.fused()), f.batch["labels"], f.batch["has_labels"] & f.seen(),
        f.cfg.diagnosis_loss, weight, f.cfg.focal_gamma)}


register(Objective("diagnosis", terms=_terms, uses_fusion=True))
