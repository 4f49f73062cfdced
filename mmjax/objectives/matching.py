"""Image-text matching (ITM) with hard negatives mined from contrastive similarities,
as in ALBEF and BLIP: the matching head is trained on the pairs the contrastive
embeddings find hardest to tell apart, not on random ones it separates trivially."""

import jax
import jax.numpy as jnp
import optax

from mmjax.objectives.terms import term

# Finite, so an excluded entry keeps softmax and its gradients finite (-inf gives NaN).
_EXCLUDED_LOGIT = -1e9


def hard_negatives(rng, similarity, valid, same=None):
    """One negative per image and per text, drawn with probability softmax(similarity)
    over the other valid pairs.

    `similarity` [B, B] holds the contrastive logits (images on rows, texts on columns,
    already scaled, so the draw is as sharp as the contrastive softmax); `valid` [B]
    marks pairs with both modalities present. Returns (negative_text_for_image,
    negative_image_for_text, has_negative): int [B], int [B], bool [B]. `same` [B, B]
    marks pairs that are interchangeable (e.g. word-for-word identical reports, common
    for normal studies), which would be contradictory negatives. has_negative
    is False for invalid pairs and when no other valid pair exists; there the indices
    are arbitrary (in range) and must be masked. No gradient flows through the draw.
    """
    similarity = jax.lax.stop_gradient(similarity).astype(jnp.float32)
    allowed = valid[:, None] & valid[None, :] & ~jnp.eye(similarity.shape[0], dtype=bool)
    if same is not None:
        allowed &= ~same
    scores = jnp.where(allowed, similarity, _EXCLUDED_LOGIT)  # allowed is symmetric
    text_for_image, image_for_text = jax.random.categorical(
        rng, jnp.stack([scores, scores.T]), axis=-1)
    return text_for_image, image_for_text, allowed.any(axis=1)


def itm_loss(positive_logits, negative_logits, positive_valid, negative_valid):
    """2-way cross-entropy (class 1 = match) over matched pairs [B, 2] where
    `positive_valid` and mined non-matching pairs [M, 2] where `negative_valid`.

    The negatives may concatenate both kinds (image with a negative text, text with a
    negative image), M = 2B, with negative_valid = [has_negative, has_negative].
    """
    logits = jnp.concatenate([positive_logits, negative_logits]).astype(jnp.float32)
    labels = jnp.concatenate([jnp.ones(positive_logits.shape[0], jnp.int32),
                              jnp.zeros(negative_logits.shape[0], jnp.int32)])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return term(losses, jnp.concatenate([positive_valid, negative_valid]))
