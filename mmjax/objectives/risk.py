"""A binary risk outcome (or its probability) from the fused vector."""

import jax.numpy as jnp

from mmjax.objectives.diagnosis import binary_cross_entropy
from mmjax.objectives.registry import Objective, register
from mmjax.objectives.terms import term


def risk_loss(logit, risk, has_risk):
    """BCE of one logit per example [B] against a 0/1 (or probability) outcome."""
    losses = binary_cross_entropy(logit.astype(jnp.float32), risk.astype(jnp.float32))
    return term(losses, has_risk)


def _terms(f) -> dict:
    return {"risk": risk_loss(f.module.risk(f.fused())[:, 0], f.batch["risk"],
                              f.batch["has_risk"] & f.seen())}


register(Objective("risk", terms=_terms, uses_fusion=True))
