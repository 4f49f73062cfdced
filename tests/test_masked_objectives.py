"""BERT masking, MLM / MAE / caption losses: statistics, numpy references, masking,
and exact (total, count) accumulation over split batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.objectives import caption, mae, mlm
from mmjax.objectives.terms import mean

VOCAB, PAD, CLS, SEP, MASK = 60, 0, 8, 9, 10
SPECIAL = (PAD, 7, CLS, SEP, MASK)  # not contiguous, as in a loaded BERT vocabulary

# Jitted, as the trainer runs them (and one compile each beats op-by-op dispatch).
mask_tokens = jax.jit(mlm.mask_tokens, static_argnums=(3, 4, 5))
random_keep = jax.jit(mae.random_keep, static_argnums=(1, 2))


def _keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)
mlm_loss, caption_loss = jax.jit(mlm.mlm_loss), jax.jit(caption.caption_loss)
mae_loss = jax.jit(mae.mae_loss, static_argnums=4)


def _reports(batch=128, length=128, seed=0):
    """[CLS] words [SEP] then padding, of random lengths."""
    rng = np.random.default_rng(seed)
    ordinary = np.setdiff1d(np.arange(VOCAB), SPECIAL)
    ids = rng.choice(ordinary, size=(batch, length)).astype(np.int32)
    lengths = rng.integers(length // 2, length + 1, size=batch)
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[~mask] = PAD
    return jnp.asarray(ids), jnp.asarray(mask)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_mask_tokens_follows_bert_proportions():
    ids, mask = _reports()
    inputs, selected = mask_tokens(_keys(0, len(ids)), ids, mask, MASK, VOCAB, SPECIAL)
    ids, mask, inputs, selected = map(np.asarray, (ids, mask, inputs, selected))
    candidates = mask & ~np.isin(ids, SPECIAL)
    assert not (selected & ~candidates).any()  # never padding, [CLS] or [SEP]
    assert selected.sum() / candidates.sum() == pytest.approx(0.15, abs=0.01)
    np.testing.assert_array_equal(inputs[~selected], ids[~selected])
    chosen, original = inputs[selected], ids[selected]
    assert np.mean(chosen == MASK) == pytest.approx(0.8, abs=0.03)
    assert np.mean(chosen == original) == pytest.approx(0.1, abs=0.03)
    replaced = chosen[(chosen != MASK) & (chosen != original)]
    assert len(replaced) / len(chosen) == pytest.approx(0.1, abs=0.03)
    assert not np.isin(replaced, SPECIAL).any()


def test_mask_tokens_is_deterministic_per_key():
    ids, mask = _reports()
    first, second, other = (mask_tokens(_keys(k, len(ids)), ids, mask, MASK, VOCAB, SPECIAL)
                            for k in (1, 1, 2))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert (first[1] != other[1]).any()
    # An example's mask depends on its own key only, not on the rest of the batch.
    half = mask_tokens(_keys(1, len(ids))[:8], ids[:8], mask[:8], MASK, VOCAB, SPECIAL)
    np.testing.assert_array_equal(half[1], first[1][:8])


def _tokens(seed=0):
    """Logits [4, 6, 7], ids, real-token mask of lengths 6, 2, 4, 6, presence."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(4, 6, 7)).astype(np.float32)
    ids = rng.integers(0, 7, size=(4, 6))
    mask = np.arange(6)[None, :] < np.array([[6], [2], [4], [6]])
    return logits, ids, mask, np.array([True, True, False, True])


def test_mlm_loss_matches_numpy():
    logits, targets, _, present = _tokens()
    selected = np.random.default_rng(1).random(targets.shape) < 0.5
    total, count = mlm_loss(*map(jnp.asarray, (logits, targets, selected, present)))
    nll = -np.take_along_axis(_log_softmax(logits), targets[..., None], -1)[..., 0]
    counted = selected & present[:, None]
    assert float(total) == pytest.approx(nll[counted].sum(), rel=1e-5)
    assert float(count) == counted.sum()


def test_caption_loss_predicts_the_next_real_token():
    logits, ids, mask, present = _tokens()
    total, count = caption_loss(*map(jnp.asarray, (logits, ids, mask, present)))
    log_probs = _log_softmax(logits)
    expected = [-log_probs[b, t, ids[b, t + 1]]
                for b in range(4) for t in range(5) if mask[b, t + 1] and present[b]]
    assert float(total) == pytest.approx(sum(expected), rel=1e-5)
    assert float(count) == len(expected) == 5 + 1 + 5


def test_random_keep_is_a_random_subset_and_its_complement():
    keep, hidden = random_keep(_keys(0, 16), 20, mask_ratio=0.75)
    keep, hidden = np.asarray(keep), np.asarray(hidden)
    assert keep.shape == (16, 5) and keep.dtype == np.int32
    assert (np.diff(keep, axis=1) > 0).all()  # ascending, hence unique
    visible = np.zeros_like(hidden)
    np.put_along_axis(visible, keep, True, axis=1)
    np.testing.assert_array_equal(hidden, ~visible)
    assert len({tuple(row) for row in keep}) > 1
    one = jax.eval_shape(lambda keys: mae.random_keep(keys, 20, 0.99), _keys(0, 2))
    assert one[0].shape == (2, 1)


def _patches(seed=0, shape=(4, 6, 8)):
    rng = np.random.default_rng(seed)
    predictions, targets = rng.normal(size=shape), 3.0 + 2.0 * rng.normal(size=shape)
    hidden = rng.random(shape[:2]) < 0.6
    return (jnp.asarray(predictions, jnp.float32), jnp.asarray(targets, jnp.float32),
            jnp.asarray(hidden))


def test_mae_loss_matches_numpy_with_and_without_normalisation():
    predictions, targets, hidden = _patches()
    present = jnp.array([True, True, False, True])
    p, t, h = map(np.asarray, (predictions, targets, hidden))
    counted = h & np.asarray(present)[:, None]
    normalised = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
    for normalize, reference in ((True, normalised), (False, t)):
        total, count = mae_loss(predictions, targets, hidden, present, normalize)
        errors = ((p - reference) ** 2).mean(-1)
        assert float(total) == pytest.approx(errors[counted].sum(), rel=1e-5)
        assert float(count) == counted.sum()


def test_mae_loss_scores_only_hidden_patches_of_present_examples():
    predictions, targets, hidden = _patches()
    centred = targets - targets.mean(-1, keepdims=True)
    perfect = centred / jnp.sqrt(targets.var(-1, keepdims=True) + 1e-6)
    assert float(mae_loss(perfect, targets, hidden)[0]) == pytest.approx(0.0, abs=1e-8)
    present = jnp.array([True, False, True, True])
    before = mae_loss(predictions, targets, hidden, present)
    scored = hidden & present[:, None]
    after = mae_loss(jnp.where(scored[..., None], predictions, 99.0), targets, hidden, present)
    np.testing.assert_array_equal(before, after)


def _split_agrees(loss, *batch):
    """mean of the whole batch == summed terms of its halves (which count different
    numbers of elements), != the mean of their means."""
    parts = [loss(*(x[:2] for x in batch)), loss(*(x[2:] for x in batch))]
    summed = tuple(sum(p[i] for p in parts) for i in range(2))
    whole = mean(loss(*batch))
    assert float(parts[0][1]) != float(parts[1][1])
    assert float(whole) == pytest.approx(float(mean(summed)), rel=1e-5)
    assert float(whole) != pytest.approx(float(sum(map(mean, parts)) / 2), rel=1e-3)


def test_losses_accumulate_exactly_over_micro_batches():
    tokens = tuple(map(jnp.asarray, _tokens()))
    _split_agrees(mlm_loss, *tokens)
    _split_agrees(caption_loss, *tokens)
    predictions, targets, hidden = _patches()
    _split_agrees(mae_loss, predictions, targets, hidden)
