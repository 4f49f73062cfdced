"""Contrastive losses: known values, and sharded == global batch on 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.config import ParallelConfig
from mmjax.objectives import contrastive
from mmjax.parallel.mesh import make_mesh

N, D = 32, 16


def _pairs(seed=0):
    rng = np.random.default_rng(seed)
    normalize = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    images = normalize(rng.normal(size=(N, D)))
    texts = normalize(images + 0.8 * rng.normal(size=(N, D)))
    valid = rng.random(N) > 0.2
    return (jnp.asarray(images, jnp.float32), jnp.asarray(texts, jnp.float32),
            jnp.asarray(valid))


def test_softmax_infonce_known_values():
    eye = jnp.eye(4)
    assert float(contrastive.softmax_infonce(eye, eye, 100.0)) < 1e-6
    assert float(contrastive.softmax_infonce(jnp.ones((4, 4)), jnp.ones((4, 4)), 1.0)) \
        == pytest.approx(np.log(4), rel=1e-6)


def test_invalid_pairs_are_neither_positives_nor_negatives():
    images, texts, valid = _pairs()
    keep = np.asarray(valid)
    garbage_texts = jnp.where(valid[:, None], texts, 7.0)
    for loss in (lambda a, b, v: contrastive.softmax_infonce(a, b, 10.0, v),
                 lambda a, b, v: contrastive.sigmoid_loss(a, b, 10.0, -5.0, v)):
        np.testing.assert_allclose(loss(images, garbage_texts, valid),
                                   loss(images[keep], texts[keep], None), rtol=1e-5)


def test_sigmoid_loss_prefers_aligned_pairs():
    images, texts, _ = _pairs()
    aligned = contrastive.sigmoid_loss(images, images, 10.0, -5.0)
    shuffled = contrastive.sigmoid_loss(images, images[::-1], 10.0, -5.0)
    assert aligned < shuffled


@pytest.mark.parametrize("name", ["softmax", "sigmoid"])
def test_sharded_losses_and_gradients_equal_the_global_batch(name):
    assert jax.device_count() == 8
    mesh = make_mesh(ParallelConfig())
    images, texts, valid = _pairs(1)
    scale, bias = jnp.float32(12.0), jnp.float32(-4.0)
    if name == "softmax":
        reference = lambda a, b, s, v: contrastive.softmax_infonce(a, b, s, v)  # noqa: E731
        sharded_fn = contrastive.sharded_softmax_infonce(mesh)
        sharded = lambda a, b, s, v: sharded_fn(a, b, s, v)  # noqa: E731
    else:
        reference = lambda a, b, s, v: contrastive.sigmoid_loss(a, b, s, bias, v)  # noqa: E731
        sharded_fn = contrastive.sharded_sigmoid_loss(mesh)
        sharded = lambda a, b, s, v: sharded_fn(a, b, s, bias, v)  # noqa: E731
    split = NamedSharding(mesh, PartitionSpec("data"))
    args = (jax.device_put(images, split), jax.device_put(texts, split), scale,
            jax.device_put(valid, split))
    want, want_grads = jax.value_and_grad(reference, argnums=(0, 1, 2))(images, texts, scale,
                                                                        valid)
    got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))(*args)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
