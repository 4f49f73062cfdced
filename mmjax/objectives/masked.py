"""Masked and generative objectives: BERT masked language modelling, MAE patch
reconstruction and teacher-forced report captioning. Each loss returns a
(total, count) term (see terms.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.objectives.terms import term

MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the selected tokens; the rest stay as they are


def _uniform_per_example(rngs, shape):
    """Uniform draws [B, *shape] from one key per example, so an example's mask does not
    depend on how the batch is split over devices or micro-batches."""
    return jax.vmap(lambda key: jax.random.uniform(key, shape))(rngs)


def mask_tokens(rngs, ids, mask, mask_id: int, vocab_size: int, special_ids, probability=0.15):
    """BERT masking. Selects each real (`mask`) non-special token with `probability`;
    of those, 80% become `mask_id`, 10% a random non-special token, 10% stay unchanged,
    so the model cannot tell from the input which tokens it is scored on.

    `rngs` holds one key per example [B]. `special_ids` are Python ints (a loaded BERT
    vocabulary has its own ids). Returns (inputs, selected), selected bool [B, L]
    marking the tokens to predict.
    """
    draws = _uniform_per_example(rngs, (3, ids.shape[1]))  # independent per token
    select, action, pick = jnp.moveaxis(draws, 1, 0)
    special = jnp.isin(ids, jnp.asarray(special_ids, ids.dtype))
    selected = mask & ~special & (select < probability)
    ordinary = jnp.asarray(np.setdiff1d(np.arange(vocab_size), special_ids), ids.dtype)
    random_ids = ordinary[jnp.minimum((pick * ordinary.size).astype(jnp.int32), ordinary.size - 1)]
    replaced = jnp.where(action < MASK_FRACTION, jnp.asarray(mask_id, ids.dtype),
                         jnp.where(action < MASK_FRACTION + RANDOM_FRACTION, random_ids, ids))
    return jnp.where(selected, replaced, ids), selected


def mlm_loss(logits, targets, selected, present=None):
    """Cross-entropy of the original ids `targets` at the selected tokens of present
    examples."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                             targets)
    return term(losses, selected, present)


def random_keep(rngs, num_patches: int, mask_ratio=0.75):
    """A uniformly random visible subset per example, as in MAE, from one key per
    example (`rngs` [B]).

    Returns keep int32 [B, K], ascending, with K = max(1, round(num_patches *
    (1 - mask_ratio))), and hidden bool [B, num_patches], True on the masked patches.
    """
    visible = max(1, round(num_patches * (1 - mask_ratio)))
    noise = _uniform_per_example(rngs, (num_patches,))
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


def caption_loss(logits, ids, mask, present=None):
    """Teacher forcing: logits at position t predict ids[t + 1]; scored where that next
    token is real (`mask`), so [SEP] is predicted and padding never is."""
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1].astype(jnp.float32), ids[:, 1:])
    return term(losses, mask[:, 1:], present)
