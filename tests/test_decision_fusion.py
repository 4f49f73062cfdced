"""Decision-level late fusion: a head per modality, logits combined by learned weights or
a gate over the present modalities; checked against the formula in NumPy, for absent
modalities (weight 0, finite gradients when none is present), and for learning to trust
the informative modality."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.nn.heads import DecisionHead

B, M, E, K = 6, 3, 8, 4
MODALITIES = ("image", "signal", "video")


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    embeddings = jnp.asarray(rng.normal(size=(B, M, E)), jnp.float32)
    present = jnp.asarray(rng.random((B, M)) > 0.3).at[0].set(True).at[1].set(False)
    return embeddings, present


def _head(gate):
    head = DecisionHead(K, MODALITIES, gate)
    embeddings, present = _inputs()
    params = nn.meta.unbox(head.init(jax.random.key(0), (embeddings, present))["params"])
    rng = np.random.default_rng(1)  # scores away from their equal start
    params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    return head, params


def _numpy(params, embeddings, present, gate):
    embeddings, present = np.asarray(embeddings, np.float64), np.asarray(present)
    logits, scores = [], []
    for i, m in enumerate(MODALITIES):
        p, x = params[f"head_{m}"], embeddings[:, i]
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = x * p["ln"]["scale"] + p["ln"]["bias"]
        logits.append(x @ p["out"]["kernel"] + p["out"]["bias"])
        if gate == "gate":
            g = params[f"gate_{m}"]
            scores.append(embeddings[:, i] @ g["kernel"][:, 0] + g["bias"][0])
    scores = np.stack(scores, 1) if gate == "gate" else np.broadcast_to(
        params["modality_scores"], (B, M))
    weights = np.where(present, np.exp(scores - scores.max(1, keepdims=True)), 0.0)
    weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-30)
    return np.einsum("bm,bmk->bk", weights, np.stack(logits, 1))


@pytest.mark.parametrize("gate", ["weights", "gate"])
def test_logits_follow_the_formula_and_ignore_absent_modalities(gate):
    head, params = _head(gate)
    embeddings, present = _inputs()
    got = head.apply({"params": params}, (embeddings, present))
    want = _numpy(jax.tree.map(np.asarray, params), embeddings, present, gate)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got[1], 0.0)  # nothing present: nothing to say
    garbage = jnp.where(present[..., None], embeddings, 1e4)
    np.testing.assert_allclose(head.apply({"params": params}, (garbage, present)), got,
                               atol=1e-5)


def test_gradients_are_finite_where_no_modality_is_present():
    head, params = _head("gate")
    embeddings, present = _inputs()
    grads = jax.grad(lambda p, e: head.apply({"params": p}, (e, present)).sum(),
                     argnums=(0, 1))(params, embeddings)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(grads[1][1], 0.0)


def test_the_weights_learn_to_trust_the_informative_modality():
    """Labels readable from the signal's embedding only: its weight grows."""
    rng = np.random.default_rng(2)
    n = 64
    labels = rng.integers(0, 2, (n, K)).astype(np.float32)
    embeddings = rng.normal(size=(n, M, E)).astype(np.float32)
    embeddings[:, 1, :K] = 3 * (2 * labels - 1)  # the signal carries the labels
    embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
    present = jnp.ones((n, M), bool)
    head = DecisionHead(K, MODALITIES, "weights")
    params = nn.meta.unbox(head.init(jax.random.key(0), (embeddings, present))["params"])
    np.testing.assert_array_equal(params["modality_scores"], 0.0)  # equal at the start
    optimizer = optax.adam(0.05)

    @jax.jit
    def step(params, state):
        loss = lambda p: optax.sigmoid_binary_cross_entropy(  # noqa: E731
            head.apply({"params": p}, (embeddings, present)), labels).mean()
        updates, state = optimizer.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    state = optimizer.init(params)
    for _ in range(60):
        params, state = step(params, state)
    weights = jax.nn.softmax(params["modality_scores"])
    assert weights[1] > 0.5 and weights[1] > 2 * max(weights[0], weights[2]), weights
