"""Masked autoencoding (MAE): reconstruct the hidden patches of images, video tubes or
signal patches from the visible ones."""

import jax
import jax.numpy as jnp

from mmjax.objectives.registry import Objective, register
from mmjax.objectives.terms import term, uniform_per_example


def random_keep(rngs, num_patches: int, mask_ratio=0.75):
    """A uniformly random visible subset per example, as in MAE, from one key per
    example (`rngs` [B]).

    Returns keep int32 [B, K], ascending, with K = max(1, round(num_patches *
    (1 - mask_ratio))), and hidden bool [B, num_patches], True on the masked patches.
    """
    visible = max(1, round(num_patches * (1 - mask_ratio)))
    noise = uniform_per_example(rngs, (num_patches,))
    batch_size = noise.shape[0]
    keep = jnp.sort(jnp.argsort(noise, axis=1)[:, :visible], axis=1).astype(jnp.int32)
    rows = jnp.arange(batch_size)[:, None]
    hidden = jnp.ones((batch_size, num_patches), bool).at[rows, keep].set(False)
    return keep, hidden


def mae_loss(predictions, targets, hidden, present=None, normalize_targets=True, eps=1e-6):
    """Per-patch mean squared error over the hidden patches of present examples.

    With `normalize_targets` each target patch is standardised by its own mean and
    variance (MAE's norm_pix_loss): the model learns local structure rather than
    brightness, which MAE found gives better representations. Shapes [B, N, P], so
    image patches, video tubes and signal patches alike.
    """
    targets = targets.astype(jnp.float32)
    if normalize_targets:
        centred = targets - targets.mean(axis=-1, keepdims=True)
        targets = centred / jnp.sqrt(targets.var(axis=-1, keepdims=True) + eps)
    errors = jnp.mean((predictions.astype(jnp.float32) - targets) ** 2, axis=-1)
    return term(errors, hidden, present)


def _terms(f) -> dict:
    terms = {}
    for i, m in enumerate(f.cfg.mae_modalities):
        keep, hidden = random_keep(f.per_example(jax.random.fold_in(f.key(1), i)),
                                   f.module.num_patches(m, f.batch), f.cfg.mae_mask_ratio)
        predictions, targets = f.module.mae(m, f.batch, keep)
        terms[f"mae/{m}"] = mae_loss(predictions, targets, hidden, f.present[m])
    return terms


register(Objective("mae", losses=lambda cfg: tuple(f"mae/{m}" for m in cfg.mae_modalities),
                   terms=_terms))
