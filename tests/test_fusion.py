"""Fusion kinds on fake encoder outputs: co-attention against its formulas in NumPy, both
directions of it, and absent modalities that never reach the fused result."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import FusionConfig
from mmjax.nn.fusion import KINDS, CoAttention, CoAttentionBlock, Fusion

B, EMBED, HEADS = 4, 16, 2
# Token count and encoder width of each fake modality: image-, signal- and video-like.
SPECS = {"image": (6, 12), "signal": (5, 8), "video": (8, 20)}
THREE = ("image", "signal", "video")


def _config(kind, depth=1):
    return FusionConfig(kind=kind, width=16, depth=depth, num_heads=HEADS, mlp_dim=32,
                        bottleneck_tokens=3)


def _inputs(modalities, seed=0, present=None):
    """(encoded, embeddings, present) as the model hands them to Fusion, with padding."""
    rng = np.random.default_rng(seed)
    encoded, embeddings = {}, {}
    for m in modalities:
        n, width = SPECS[m]
        lengths = rng.integers(2, n + 1, B)
        encoded[m] = (jnp.asarray(rng.normal(size=(B, width)), jnp.float32),
                      jnp.asarray(rng.normal(size=(B, n, width)), jnp.float32),
                      jnp.asarray(np.arange(n)[None] < lengths[:, None]))
        e = rng.normal(size=(B, EMBED))
        embeddings[m] = jnp.asarray(e / np.linalg.norm(e, axis=-1, keepdims=True), jnp.float32)
    present = present or {m: jnp.ones(B, bool) for m in modalities}
    return encoded, embeddings, present


def _build(kind, modalities, depth=1):
    """The module, its unboxed params and a jitted apply."""
    module = Fusion(_config(kind, depth), modalities)
    variables = module.init(jax.random.key(0), *_inputs(modalities))
    params = nn.meta.unbox(variables.get("params", {}))
    return module, params, jax.jit(lambda *a: module.apply({"params": params}, *a))


# ---- NumPy references.

def _np_dense(p, x, contract=1):
    kernel = np.asarray(p["kernel"])
    return np.tensordot(x, kernel, contract) + np.asarray(p["bias"])


def _np_layer_norm(p, x, eps=1e-6):
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return x * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _np_co_attention(params, tokens, masks, modalities):
    """Q^m = X^m W_Q^m; K, V: each other modality n's X^n W_K^n, X^n W_V^n, concatenated;
    softmax(Q K^T / sqrt(d_k)) V, heads merged by W_O^m; zero where no key is left."""
    updates = {}
    for m in modalities:
        others = [n for n in modalities if n != m]
        q = _np_dense(params[f"query_{m}"], tokens[m])  # [B, Lq, H, dk]
        k = np.concatenate([_np_dense(params[f"key_{n}"], tokens[n]) for n in others], 1)
        v = np.concatenate([_np_dense(params[f"value_{n}"], tokens[n]) for n in others], 1)
        mask = np.concatenate([masks[n] for n in others], 1)
        scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        scores = np.where(mask[:, None, None, :], scores, -np.inf)
        with np.errstate(invalid="ignore"):  # rows without a key: NaN here, zeroed below
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
        heads = np.einsum("bhqs,bshk->bqhk", weights, v)
        out = _np_dense(params[f"out_{m}"], heads, contract=2)
        updates[m] = np.where(mask.any(1)[:, None, None], out, 0)
    return updates


def _np_hybrid(params, encoded, present, modalities):
    """The whole hybrid fusion at depth 1: inputs, one co-attention layer, pooling."""
    tokens, masks = {}, {}
    for i, m in enumerate(modalities):
        _, x, mask = (np.asarray(a) for a in encoded[m])
        masks[m] = mask & np.asarray(present[m])[:, None]
        x = np.where(masks[m][..., None], x, 0)
        tokens[m] = _np_dense(params[f"in_{m}"], x) + np.asarray(params["type_embed"][i])
    layer = params["coattn_0"]
    normed = {m: _np_layer_norm(layer[f"ln_attn_{m}"], tokens[m]) for m in modalities}
    updates = _np_co_attention(layer["attn"], normed, masks, modalities)
    pooled = []
    for m in modalities:
        x = tokens[m] + updates[m]
        mlp = layer[f"mlp_{m}"]
        y = _np_gelu(_np_dense(mlp["fc1"], _np_layer_norm(layer[f"ln_mlp_{m}"], x)))
        x = _np_layer_norm(params[f"ln_final_{m}"], x + _np_dense(mlp["fc2"], y))
        weights = masks[m][..., None]
        pooled.append((x * weights).sum(1) / np.maximum(weights.sum(1), 1))
    here = np.stack([np.asarray(present[m]) for m in modalities], 1)[..., None]
    return (np.stack(pooled, 1) * here).sum(1) / np.maximum(here.sum(1), 1)


# ---- Co-attention.

@pytest.mark.parametrize("modalities", [("image", "signal"), THREE])
def test_co_attention_matches_the_formulas_in_both_directions(modalities):
    rng = np.random.default_rng(1)
    tokens = {m: rng.normal(size=(B, SPECS[m][0], 16)).astype(np.float32) for m in modalities}
    masks = {m: np.arange(SPECS[m][0])[None] < rng.integers(1, SPECS[m][0], B)[:, None]
             for m in modalities}
    for m in modalities[1:]:  # example 3: only the first modality is there
        masks[m][3] = False
    module = CoAttention(HEADS, modalities)
    params = nn.meta.unbox(module.init(jax.random.key(0), tokens, masks)["params"])
    got = module.apply({"params": params}, tokens, masks)
    want = _np_co_attention(jax.tree.map(np.asarray, params), tokens, masks, modalities)
    for m in modalities:
        np.testing.assert_allclose(got[m], want[m], atol=1e-5)
        assert np.abs(want[m][:3]).max() > 1e-2  # every modality is updated
    # With nothing else to attend to, the first modality gets no update (and no NaN).
    np.testing.assert_array_equal(got[modalities[0]][3], 0)
    # Padded keys are never attended to: changing them changes no real token's update.
    padded = {m: np.where(masks[m][..., None], tokens[m], 1e3) for m in modalities}
    for m, update in module.apply({"params": params}, padded, masks).items():
        np.testing.assert_allclose(update[masks[m]], got[m][masks[m]], atol=1e-5)


@pytest.mark.parametrize("modalities", [("image", "signal"), THREE])
def test_a_hybrid_layer_matches_the_formulas_from_the_params_tree(modalities):
    present = {m: jnp.ones(B, bool) for m in modalities}
    present[modalities[-1]] = jnp.array([True, False, True, True])
    inputs = _inputs(modalities, seed=2, present=present)
    _, params, apply = _build("hybrid", modalities)
    want = _np_hybrid(jax.tree.map(np.asarray, params), inputs[0], present, modalities)
    np.testing.assert_allclose(apply(*inputs), want, atol=1e-5)


def test_co_attention_updates_both_directions():
    modalities = ("image", "signal")
    encoded, embeddings, present = _inputs(modalities)
    module, params, _ = _build("hybrid", modalities)

    def fused(image, signal):
        inputs = {"image": (*encoded["image"][:1], image, encoded["image"][2]),
                  "signal": (*encoded["signal"][:1], signal, encoded["signal"][2])}
        return module.apply({"params": params}, inputs, embeddings, present).sum()

    grads = jax.grad(fused, argnums=(0, 1))(encoded["image"][1], encoded["signal"][1])
    assert all(np.abs(g).max() > 0 for g in grads)

    # One layer on its own: each modality's new tokens depend on the other's.
    block = CoAttentionBlock(HEADS, 32, modalities, module.options)
    rng = np.random.default_rng(3)
    tokens = {m: jnp.asarray(rng.normal(size=(B, SPECS[m][0], 16)), jnp.float32)
              for m in modalities}
    masks = {m: encoded[m][2] for m in modalities}

    def layer(tokens):
        return block.apply({"params": params["coattn_0"]}, tokens, masks)

    for m, n in (("image", "signal"), ("signal", "image")):
        grad = jax.grad(lambda x, m=m, n=n: layer({**tokens, n: x})[m].sum())(tokens[n])
        assert np.abs(grad).max() > 1e-4, f"{m} does not attend to {n}"
        changed = layer({**tokens, n: -tokens[n]})[m]  # (the LN would undo a shift)
        assert np.abs(changed - layer(tokens)[m]).max() > 1e-3, f"{n} does not change {m}"


def test_hybrid_needs_two_modalities():
    with pytest.raises(ValueError, match="two or more modalities"):
        _build("hybrid", ("image",))


def test_decision_fusion_is_not_done_by_fusion():
    assert "decision" not in KINDS
    with pytest.raises(ValueError, match="in the model"):
        _build("decision", THREE)


# ---- Every kind.

@pytest.mark.parametrize("kind", KINDS)
def test_garbage_in_an_absent_modality_changes_nothing(kind):
    """Image is absent in examples 2 and 3, video in 1 and 3 (3 has only the signal)."""
    present = {"image": jnp.array([True, True, False, False]), "signal": jnp.ones(B, bool),
               "video": jnp.array([True, False, True, False])}
    encoded, embeddings, _ = _inputs(THREE, present=present)
    _, params, apply = _build(kind, THREE, depth=2)
    fused = np.asarray(apply(encoded, embeddings, present))
    rng = np.random.default_rng(4)
    for m, absent in (("image", [2, 3]), ("video", [1, 3])):
        pooled, tokens, _ = encoded[m]
        garbage = {**encoded, m: (jnp.asarray(1e6 * rng.normal(size=pooled.shape), jnp.float32),
                                  jnp.asarray(1e6 * rng.normal(size=tokens.shape), jnp.float32),
                                  jnp.asarray(rng.random(tokens.shape[:2]) < 0.5))}
        junk = {**embeddings, m: jnp.asarray(1e6 * rng.normal(size=(B, EMBED)), jnp.float32)}
        out = np.asarray(apply(garbage, junk, present))
        np.testing.assert_allclose(out[absent], fused[absent], rtol=0, atol=1e-6)
        assert np.abs(out[0] - fused[0]).max() > 1e-3  # where it is present, it matters
        assert np.isfinite(out).all()


def _without(params, modality):
    """The params of the same fusion without `modality` (the last one configured)."""
    if not isinstance(params, dict):
        return params
    kept = {k: _without(v, modality) for k, v in params.items()
            if not k.endswith(f"_{modality}")}
    if "type_embed" in kept:
        kept["type_embed"] = kept["type_embed"][:-1]
    return kept


@pytest.mark.parametrize("kind", KINDS)
def test_an_absent_modality_is_as_if_it_were_not_configured(kind):
    """Not even its parameters reach the result (for bottleneck: its copy of z)."""
    present = {"image": jnp.ones(B, bool), "signal": jnp.array([True, True, True, False]),
               "video": jnp.array([True, False, True, False])}
    encoded, embeddings, _ = _inputs(THREE, present=present)
    _, params, apply = _build(kind, THREE, depth=2)
    two = Fusion(_config(kind, depth=2), THREE[:2])
    pair = [{m: x[m] for m in THREE[:2]} for x in (encoded, embeddings, present)]
    want = two.apply({"params": _without(params, "video")}, *pair)
    np.testing.assert_allclose(apply(encoded, embeddings, present)[1::2], want[1::2],
                               atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_no_gradient_reaches_an_absent_modality(kind):
    present = {"image": jnp.ones(B, bool), "signal": jnp.ones(B, bool),
               "video": jnp.array([True, False, True, False])}
    encoded, embeddings, _ = _inputs(THREE, present=present)
    module, params, _ = _build(kind, THREE)

    def absent_rows(tokens, embedding):
        inputs = {**encoded, "video": (encoded["video"][0], tokens, encoded["video"][2])}
        fused = module.apply({"params": params}, inputs, {**embeddings, "video": embedding},
                             present)
        return fused[np.array([1, 3])].sum()

    grads = jax.grad(absent_rows, argnums=(0, 1))(encoded["video"][1], embeddings["video"])
    for grad in grads:
        np.testing.assert_array_equal(grad[np.array([1, 3])], 0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_one_finite_vector_per_example(kind):
    present = {m: jnp.array([True, True, False, False]) for m in THREE}
    present["signal"] = jnp.array([True, False, True, False])  # nothing in example 3
    _, _, apply = _build(kind, THREE)
    fused = apply(*_inputs(THREE, present=present)[:2], present)
    assert fused.shape == (B, EMBED if kind == "late" else _config(kind).width)
    assert np.isfinite(np.asarray(fused)).all()
    if kind in ("late", "hybrid"):
        np.testing.assert_array_equal(fused[3], 0)


def test_bottleneck_tokens_carry_every_present_modality():
    """Only z crosses modalities, so a change to one reaches the output through z."""
    _, params, apply = _build("bottleneck", THREE, depth=2)
    assert params["bottleneck"].shape == (1, 3, 16)
    encoded, embeddings, present = _inputs(THREE)
    fused = apply(encoded, embeddings, present)
    for m in THREE:
        pooled, tokens, mask = encoded[m]
        out = apply({**encoded, m: (pooled, -tokens, mask)}, embeddings, present)
        assert np.abs(out - fused).max() > 1e-3, m
