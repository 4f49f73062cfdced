"""Combining the objectives' mean losses into one training loss."""

import jax.numpy as jnp


def _check_keys(losses, other, name: str):
    missing, extra = sorted(losses.keys() - other.keys()), sorted(other.keys() - losses.keys())
    if missing:
        raise ValueError(f"{name} lack the losses {missing}")
    if extra:
        raise ValueError(f"{name} name {extra}, which are not losses ({sorted(losses)})")


def combine(losses: dict, weights: dict, log_variances: dict | None = None):
    """Sum over tasks of weight_k x L_k, or with `log_variances` s_k (learned
    parameters) the uncertainty weighting of Kendall, Gal & Cipolla (2018):

        sum_k weight_k x (exp(-s_k) L_k + s_k).

    With s = log sigma^2 this is twice the paper's L / (2 sigma^2) + log sigma: the 1/2
    factors drop out, the optimum s_k = log L_k is the same, and each task's effective
    weight exp(-s_k) tracks 1 / L_k, so tasks on different scales balance themselves.
    """
    _check_keys(losses, weights, "weights")
    if log_variances is not None:
        _check_keys(losses, log_variances, "log_variances")
        losses = {k: jnp.exp(-log_variances[k]) * loss + log_variances[k]
                  for k, loss in losses.items()}
    return sum((weights[k] * loss for k, loss in losses.items()), jnp.zeros((), jnp.float32))
