"""The (data, fsdp, tensor) mesh, the logical-axis rules, and sharded == single-device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mmjax.config import ConfigError, ModelConfig, ParallelConfig, TextConfig, ViTConfig
from mmjax.nn.model import MultimodalModel
from mmjax.objectives import contrastive
from mmjax.parallel.mesh import batch_sharding, check_divisible, make_mesh
from mmjax.parallel.rules import (
    LOGICAL_AXIS_RULES,
    abstract_params,
    param_shardings,
    sharding_context,
    unsharded_above,
)

B, SIZE, LENGTH, VOCAB = 16, 32, 16, 100
SMALL = {"width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 8, 1)]
FC1 = ("encoders_image", "transformer", "block_0", "mlp", "fc1", "kernel")


def _mesh(data, fsdp, tensor):
    return make_mesh(ParallelConfig(data=data, fsdp=fsdp, tensor=tensor))


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("sizes, shape", [
    ((-1, 1, 1), (8, 1, 1)), ((2, -1, 1), (2, 4, 1)), ((2, 2, 2), (2, 2, 2)),
    ((1, 8, 1), (1, 8, 1)), ((1, 1, -1), (1, 1, 8)), ((3, 1, 1), (3, 1, 1)),
])
def test_mesh_shapes(sizes, shape):
    mesh = _mesh(*sizes)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == shape


def test_mesh_over_given_devices():
    assert tuple(make_mesh(ParallelConfig(), jax.devices()[:4]).shape.values()) == (4, 1, 1)


@pytest.mark.parametrize("sizes, message", [
    ((4, 4, 1), "parallel.data × parallel.fsdp × parallel.tensor = 16 but 8 devices"),
    ((-1, -1, 1), "only one of"),
    ((-1, 3, 1), "is 3, which does not divide the 8 devices"),
    ((0, 1, 1), "parallel.data=0"),
])
def test_impossible_meshes_name_the_keys(sizes, message):
    with pytest.raises(ConfigError, match=message):
        _mesh(*sizes)


def test_batch_divides_over_data_and_fsdp():
    check_divisible(16, _mesh(2, 4, 1), "train.batch_size")
    check_divisible(4, _mesh(2, 2, 2), "train.batch_size")
    with pytest.raises(ConfigError, match="train.batch_size=12 .* 8 batch shards"):
        check_divisible(12, _mesh(2, 4, 1), "train.batch_size")


# ---- A tiny image-report model.


def _batch():
    rng = np.random.default_rng(0)
    mask = np.ones((B, LENGTH), bool)
    mask[:, 10:] = False
    has_image = np.ones(B, bool)
    has_image[[3, 11]] = False
    return {
        "image": jnp.asarray(rng.normal(size=(B, SIZE, SIZE, 1)), jnp.float32),
        "text": jnp.asarray(rng.integers(5, VOCAB, (B, LENGTH)), jnp.int32),
        "text_mask": jnp.asarray(mask),
        "has_image": jnp.asarray(has_image),
        "has_report": jnp.ones(B, bool),
    }


@pytest.fixture(scope="module")
def tiny():
    """The model, its boxed abstract parameters, random values of that shape (compiling
    init would double the time) and a batch."""
    cfg = ModelConfig(image=ViTConfig(patch_size=8, **SMALL), text=TextConfig(**SMALL),
                      embed_dim=16)
    model = MultimodalModel(cfg, VOCAB)
    batch = _batch()
    abstract = abstract_params(model, jax.random.key(0), batch, model.contrastive)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: 0.2 * rng.normal(size=x.shape).astype(np.float32),
                          nn.meta.unbox(abstract))
    return model, abstract, params, batch


def _compile(lowered):
    """Without LLVM optimisation: these tests check values, and compile twice as fast."""
    return lowered.compile({"xla_backend_optimization_level": 0,
                            "xla_llvm_disable_expensive_passes": True})


def test_every_logical_name_has_a_rule():
    cfg = ModelConfig(image=ViTConfig(patch_size=8, pool="map", **SMALL),
                      text=TextConfig(**SMALL), embed_dim=16)
    model = MultimodalModel(cfg, VOCAB, num_labels=3)
    boxed = abstract_params(model, jax.random.key(0), _batch())
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    names = {n for box in jax.tree.leaves(boxed, is_leaf=is_box) if is_box(box)
             for n in box.names if n}
    assert names <= {logical for logical, _ in LOGICAL_AXIS_RULES}


def test_fsdp_splits_the_embed_dimension_of_kernels(tiny):
    _, abstract, _, _ = tiny
    shardings = param_shardings(_mesh(2, 4, 1), abstract)
    assert _at(shardings, FC1).spec == PartitionSpec("fsdp", None)
    assert _at(shardings, FC1[:-2] + ("fc2", "kernel")).spec == PartitionSpec(None, "fsdp")
    # An embed -> embed projection names `embed` twice; it is split once.
    assert shardings["proj_image"]["kernel"].spec == PartitionSpec("fsdp", None)
    assert shardings["logit_scale"].spec == PartitionSpec()


def test_dimensions_that_do_not_divide_stay_whole(tiny):
    _, abstract, _, _ = tiny
    shardings = param_shardings(_mesh(1, 1, 8), abstract)
    attention = ("encoders_image", "transformer", "block_0", "attn")
    assert _at(shardings, FC1).spec == PartitionSpec(None, "tensor")  # mlp 64 on 8
    assert _at(shardings, attention + ("query", "kernel")).spec == PartitionSpec(None, None, None)
    table = shardings["encoders_report"]["token_embed"]["embedding"]
    assert table.spec == PartitionSpec(None, None)  # vocab 100 on 8
    big = unsharded_above(shardings, abstract, min_bytes=1000)
    assert "encoders_report/token_embed/embedding" in big
    assert "encoders_image/transformer/block_0/mlp/fc1/kernel" not in big


def test_a_data_only_mesh_replicates_every_parameter(tiny):
    _, abstract, _, _ = tiny
    shardings = param_shardings(_mesh(8, 1, 1), abstract)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings))


def _contrastive_loss(model):
    def loss(params, batch):
        out = model.apply({"params": params}, batch, method=model.contrastive)
        valid = out["present"]["image"] & out["present"]["report"]
        return contrastive.softmax_infonce(out["embeddings"]["image"],
                                           out["embeddings"]["report"], out["scale"], valid)

    return jax.value_and_grad(loss)


@pytest.fixture(scope="module")
def single_device(tiny):
    model, _, params, batch = tiny
    return _compile(jax.jit(_contrastive_loss(model)).lower(params, batch))(params, batch)


@pytest.mark.parametrize("sizes", MESHES)
def test_sharded_loss_and_gradients_equal_one_device(tiny, single_device, sizes):
    model, abstract, params, batch = tiny
    mesh = _mesh(*sizes)
    placed = jax.device_put(params, param_shardings(mesh, abstract))
    split_batch = jax.device_put(batch, batch_sharding(mesh))
    assert _at(placed, FC1).sharding.is_fully_replicated == (sizes == (8, 1, 1))
    with sharding_context(mesh):
        lowered = jax.jit(_contrastive_loss(model)).lower(placed, split_batch)
    assert "sharding_constraint" in lowered.as_text()  # the activations' names took effect
    loss, grads = _compile(lowered)(placed, split_batch)
    want_loss, want_grads = single_device
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4),
                 grads, want_grads)


# ---- Contrastive losses over several mesh axes, and inside pmap.

N, D = 32, 16
LOSSES = {
    "softmax": (contrastive.softmax_infonce, contrastive.sharded_softmax_infonce,
                contrastive.softmax_infonce_local, lambda p: (p["scale"],)),
    "sigmoid": (contrastive.sigmoid_loss, contrastive.sharded_sigmoid_loss,
                contrastive.sigmoid_loss_local, lambda p: (p["scale"], p["bias"])),
}


def _pairs():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    texts = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    return images, texts, jnp.asarray(rng.random(N) > 0.2)


def _projection(seed=2):
    """Replicated parameters that turn inputs into embeddings, as a model would."""
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(D, D)) / 4, jnp.float32),
            "text": jnp.asarray(rng.normal(size=(D, D)) / 4, jnp.float32),
            "scale": jnp.float32(5.0), "bias": jnp.float32(-3.0)}


@pytest.mark.parametrize("name", LOSSES)
def test_sharded_losses_over_data_and_fsdp_equal_the_global_batch(name):
    global_fn, sharded, _, extra = LOSSES[name]
    mesh = _mesh(2, 4, 1)
    images, texts, valid = _pairs()
    p = _projection()
    args = (images, texts, *extra(p), valid)
    argnums = (0, 1, 2)
    want, want_grads = jax.value_and_grad(global_fn, argnums)(*args)
    split = batch_sharding(mesh)
    placed = (jax.device_put(images, split), jax.device_put(texts, split), *extra(p),
              jax.device_put(valid, split))
    got, got_grads = jax.jit(jax.value_and_grad(sharded(mesh), argnums))(*placed)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_local_bodies_in_pmap_with_averaged_gradients_equal_the_global_batch(name):
    """pmap transposes psum to psum, so each device's gradient is n× its share; the usual
    pmean of gradients over the axis gives exactly the global gradient."""
    global_fn, _, local_fn, extra = LOSSES[name]
    images, texts, valid = _pairs()
    body = local_fn("data")

    def loss(p, fn, x, t, v):
        return fn(x @ p["image"], t @ p["text"], *extra(p), v)

    def step(p, x, t, v):
        value, grads = jax.value_and_grad(loss)(p, body, x, t, v)
        return value, jax.lax.pmean(grads, "data")

    want, want_grads = jax.value_and_grad(loss)(_projection(), global_fn, images, texts, valid)
    shard = lambda x: x.reshape(8, N // 8, *x.shape[1:])  # noqa: E731
    got, got_grads = jax.pmap(step, axis_name="data", in_axes=(None, 0, 0, 0))(
        _projection(), shard(images), shard(texts), shard(valid))
    np.testing.assert_allclose(got, np.full(8, want), rtol=1e-5)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, np.broadcast_to(w, g.shape),
                                                         rtol=1e-4, atol=1e-6),
                 got_grads, want_grads)
