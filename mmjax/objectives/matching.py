"""Image-text matching (ITM) on the fused vector, with hard negatives mined from
contrastive similarities as in ALBEF and BLIP: the matching head is trained on the pairs
the contrastive embeddings find hardest to tell apart, not on random ones it separates
trivially."""

import jax
import jax.numpy as jnp
import optax

from mmjax.objectives.registry import Objective, pair, register
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


def _interchangeable(batch, a: str, b: str):
    """[B, B] pairs that are no true negatives of each other: (as in MedCLIP) studies
    labelled with exactly the same findings, whose reports say the same thing in other
    words and which no image could tell apart, and word-for-word identical reports."""
    labels, labelled = batch["labels"], batch["has_labels"]
    same = (labelled[:, None] & labelled[None, :]
            & jnp.all(labels[:, None, :] == labels[None, :, :], axis=-1))
    if "report" in (a, b):
        text = jnp.where(batch["text_mask"], batch["text"], -1)
        same |= jnp.all(text[:, None, :] == text[None, :, :], axis=-1)
    return same


def _terms(f) -> dict:
    """Matched pairs against the hardest-looking wrong partner each way (ALBEF)."""
    module, encoded, embeddings = f.module, f.encoded, f.embeddings
    a, b = pair(f.cfg.matching_pair)
    valid = f.present[a] & f.present[b]
    similarity = module.scale() * embeddings[a] @ embeddings[b].T
    negative_b, negative_a, has_negative = hard_negatives(
        f.key(2), similarity, valid, _interchangeable(f.batch, a, b))
    only_pair = {m: jnp.zeros_like(valid) for m in f.present}

    def logits(index_a, index_b, mask):
        """Matching logits of a's rows index_a with b's rows index_b."""
        enc, emb = dict(encoded), dict(embeddings)
        for m, rows in ((a, index_a), (b, index_b)):
            enc[m] = tuple(x[rows] for x in encoded[m])
            emb[m] = embeddings[m][rows]
        return module.matching(module.fuse(enc, emb, {**only_pair, a: mask, b: mask}))

    rows = jnp.arange(valid.shape[0])
    return {"matching": itm_loss(
        logits(rows, rows, valid),
        jnp.concatenate([logits(rows, negative_b, has_negative),
                         logits(negative_a, rows, has_negative)]),
        valid, jnp.concatenate([has_negative, has_negative]))}


register(Objective("matching", terms=_terms,
                   uses_fusion=True))
