"""Hard-negative mining for image-text matching, and the ITM loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from mmjax.objectives import matching

B, DRAWS = 6, 4000
# lax.map rather than vmap: compiles in half the time.
_draw = jax.jit(lambda similarity, valid: jax.lax.map(
    lambda i: matching.hard_negatives(jax.random.fold_in(jax.random.key(0), i), similarity,
                                      valid), jnp.arange(DRAWS)))


def _draws(similarity, valid):
    """DRAWS independent (text for image, image for text, has_negative), each [DRAWS, B]."""
    return map(np.asarray, _draw(jnp.asarray(similarity, jnp.float32), jnp.asarray(valid)))


def test_negatives_are_other_valid_pairs():
    similarity = np.random.default_rng(0).normal(size=(B, B))
    valid = np.array([True, True, False, True, True, False])
    texts, images, has_negative = _draws(similarity, valid)
    np.testing.assert_array_equal(has_negative[0], valid)
    for negatives in (texts, images):
        rows = np.broadcast_to(np.arange(B), negatives.shape)
        chosen = negatives[:, valid]
        assert (chosen != rows[:, valid]).all()
        assert valid[chosen].all()


def test_a_lone_valid_pair_has_no_negative():
    valid = np.eye(1, B, 2, dtype=bool)[0]
    *_, has_negative = _draws(np.zeros((B, B)), valid)
    assert not has_negative.any()


def test_peaked_similarity_picks_the_hardest_negative():
    similarity = 1000.0 * np.random.default_rng(1).normal(size=(B, B))
    valid = np.array([True, True, True, False, True, True])
    texts, images, _ = _draws(similarity, valid)
    allowed = valid[:, None] & valid[None, :] & ~np.eye(B, dtype=bool)
    masked = np.where(allowed, similarity, -np.inf)
    np.testing.assert_array_equal(texts[:, valid], np.broadcast_to(
        masked.argmax(1)[valid], (DRAWS, valid.sum())))
    np.testing.assert_array_equal(images[:, valid], np.broadcast_to(
        masked.argmax(0)[valid], (DRAWS, valid.sum())))


def test_draws_follow_the_softmax_of_similarities():
    similarity = np.log(np.arange(1, B * B + 1, dtype=float)).reshape(B, B)
    texts, images, _ = _draws(similarity, np.ones(B, bool))
    others = np.arange(B) != 0
    for negatives, scores in ((texts, similarity[0]), (images, similarity[:, 0])):
        frequencies = np.bincount(negatives[:, 0], minlength=B) / DRAWS
        np.testing.assert_allclose(frequencies, softmax(np.where(others, scores, -np.inf)),
                                   atol=0.03)


def test_itm_loss_matches_numpy():
    rng = np.random.default_rng(3)
    positives, negatives = rng.normal(size=(3, 2)), rng.normal(size=(6, 2))
    positive_valid = np.array([True, False, True])
    negative_valid = np.array([True, True, False, False, True, True])
    arrays = map(jnp.asarray, (positives, negatives, positive_valid, negative_valid))
    total, count = jax.jit(matching.itm_loss)(*arrays)
    nll = lambda logits, label: -np.log(softmax(logits, -1)[:, label])  # noqa: E731
    expected = nll(positives, 1)[positive_valid].sum() + nll(negatives, 0)[negative_valid].sum()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(count) == 6
