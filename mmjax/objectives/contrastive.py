"""Softmax InfoNCE (CLIP loss) in both directions, over pairs that exist."""

import jax.numpy as jnp
import optax

# Finite, so masked entries keep finite gradients (an -inf would turn into NaN).
_MASKED_LOGIT = -1e9


def softmax_infonce(image_emb, text_emb, scale, valid=None):
    """Mean over valid pairs of image->text and text->image cross-entropy.

    Pair i matches pair i. `valid` [B] marks pairs where both modalities are present;
    the others are neither positives nor negatives. Under jit with the batch sharded
    on the mesh, XLA gathers the columns so the logits span the global batch.
    """
    logits = scale * image_emb @ text_emb.T
    if valid is None:
        valid = jnp.ones(logits.shape[0], bool)
    pair = valid[:, None] & valid[None, :]
    logits = jnp.where(pair, logits, _MASKED_LOGIT)
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    per_pair = 0.5 * (image_to_text + text_to_image)
    return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(valid.sum(), 1)
