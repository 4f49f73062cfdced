import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import ModelConfig
from mmjax.nn.attention import MultiHeadAttention
from mmjax.nn.model import TwoTower


def _numpy_attention(params, x, context, key_mask, num_heads):
    """Q = XW_Q, K = CW_K, V = CW_V, A = softmax(QK^T / sqrt(d_k)), O = AV W_O."""
    def proj(name, inputs):
        return np.einsum("bld,dhk->bhlk", inputs, params[name]["kernel"]) + \
            params[name]["bias"][None, :, None, :]

    q, k, v = proj("query", x), proj("key", context), proj("value", context)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = weights @ v  # [B, H, Lq, dk]
    out = np.einsum("bhlk,hkd->bld", heads, params["out"]["kernel"]) + params["out"]["bias"]
    assert num_heads == q.shape[1]
    return out


def test_cross_attention_matches_the_textbook_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    context = rng.normal(size=(2, 7, 16)).astype(np.float32)
    key_mask = np.ones((2, 7), bool)
    key_mask[1, 4:] = False
    module = MultiHeadAttention(num_heads=4)
    params = module.init(jax.random.key(0), x, context, key_mask)["params"]
    got = module.apply({"params": params}, x, context, key_mask)
    want = _numpy_attention(jax.tree.map(np.asarray, params), x, context, key_mask, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def two_tower():
    cfg = ModelConfig()
    cfg.image.width = cfg.text.width = 32
    cfg.image.patch_size = 4
    model = TwoTower(cfg, vocab_size=50)
    images = jnp.asarray(np.random.default_rng(0).random((3, 16, 16, 1)), jnp.float32)
    ids = jnp.asarray(np.random.default_rng(1).integers(5, 50, (3, 12)), jnp.int32)
    mask = jnp.ones((3, 12), bool).at[:, 8:].set(False)
    params = model.init(jax.random.key(0), images, ids, mask)["params"]
    return model, params, images, ids, mask


def test_embeddings_are_unit_norm_in_the_shared_space(two_tower):
    model, params, images, ids, mask = two_tower
    image_emb, text_emb, scale = model.apply({"params": params}, images, ids, mask)
    assert image_emb.shape == text_emb.shape == (3, model.config.embed_dim)
    np.testing.assert_allclose(jnp.linalg.norm(image_emb, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scale, 1 / model.config.init_temperature, rtol=1e-5)


def test_padding_tokens_do_not_change_the_text_embedding(two_tower):
    model, params, _, ids, mask = two_tower
    other_padding = ids.at[:, 8:].set(7)
    a = model.apply({"params": params}, ids, mask, method=model.embed_text)
    b = model.apply({"params": params}, other_padding, mask, method=model.embed_text)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_params_carry_no_weak_types(two_tower):
    """A weak-typed parameter makes the train step compile more than once."""
    _, params, *_ = two_tower
    assert not any(leaf.weak_type for leaf in jax.tree.leaves(params))
