"""ResNet and VGG encoders: shapes, spatial tokens, BatchNorm train/eval, statistics over
the global batch under jit and pmap, masked examples, and a few training steps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from mmjax.config import CNNConfig, ParallelConfig
from mmjax.nn.cnn import CNNEncoder
from mmjax.nn.transformer import BlockOptions
from mmjax.parallel.mesh import batch_sharding, make_mesh
from mmjax.parallel.rules import LOGICAL_AXIS_RULES, param_shardings, sharding_context

B, SIZE = 16, 16
TINY = {"width": 8, "stages": (1, 1), "norm_groups": 4}


def _encoder(kind="resnet", batch_axis=None, remat=False, **overrides):
    return CNNEncoder(CNNConfig(**{**TINY, **overrides}), kind, BlockOptions(remat=remat),
                      batch_axis)


def _images(n=B, channels=3, seed=0):
    """Each example offset differently, so per-device statistics differ from global ones."""
    rng = np.random.default_rng(seed)
    offsets = np.linspace(-2, 2, n)[:, None, None, None]
    return jnp.asarray(rng.normal(size=(n, SIZE, SIZE, channels)) + offsets, jnp.float32)


def _init(model, images, boxed=False):
    """Compiled without LLVM optimisation: random initialisers take 10x longer otherwise."""
    key = jax.random.key(0)
    variables = jax.jit(model.init).lower(key, images).compile(
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})(
        key, images)
    return variables if boxed else nn.meta.unbox(variables)


def _train(model):
    """Encode with the batch's statistics: (outputs, updated batch_stats)."""
    @jax.jit
    def apply(variables, images, valid=None):
        out, updates = model.apply(variables, images, valid, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    return apply


def _close(a, b, atol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5), a, b)


@pytest.mark.parametrize("kind, overrides, channels, width, tokens", [
    ("resnet", {}, 1, 16, 8 * 8),  # small stem: 16 -> stage 1 halves -> 8
    ("resnet", {"stem": "imagenet"}, 3, 16, 2 * 2),  # 16 -> conv/2 -> pool/2 -> stage/2
    ("resnet", {"bottleneck": True, "pool": "map"}, 3, 4 * 16, 8 * 8),
    ("vgg", {}, 1, 16, 8 * 8),  # one pool between the two stages, none after the last
    ("vgg", {"stages": (1, 1, 1, 1, 1), "pool": "map"}, 3, 64, 1),  # capped at 8 x width
])
def test_shapes(kind, overrides, channels, width, tokens):
    model = _encoder(kind, **overrides)
    (pooled, toks, mask), _ = jax.eval_shape(model.init_with_output, jax.random.key(0),
                                             _images(2, channels))
    assert pooled.shape == (2, width)
    assert toks.shape == (2, tokens, width)
    assert mask.shape == (2, tokens) and mask.dtype == bool


def _tokens(model, variables, images):
    """Tokens of each of a stack of batches, evaluated."""
    return jax.jit(jax.vmap(lambda v, x: model.apply(v, x)[1], (None, 0)))(variables, images)


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_tokens_are_row_major_positions(kind):
    """With running averages (eval) every op is local: a corner pixel reaches the tokens
    near it and not the far corner, beyond its receptive field (ResNet 13 px, VGG 8 px)."""
    model = _encoder(kind, norm="batch")
    images = _images(2)
    variables = _init(model, images)
    changed = images.at[:, 0, 0].add(5.0)
    both = jnp.stack([images, changed])
    tokens = _tokens(model, variables, both)
    delta = np.abs(np.asarray(tokens[1] - tokens[0])).max(axis=-1)  # [B, 64]
    assert (delta[:, 0] > 1e-2).all()
    np.testing.assert_array_equal(delta[:, -1], 0.0)
    # GroupNorm pools statistics over the whole map, so the far corner moves, but less.
    group = _encoder(kind)
    group_vars = _init(group, images)
    tokens = _tokens(group, group_vars, both)
    delta = np.abs(np.asarray(tokens[1] - tokens[0])).max(axis=-1)
    assert (delta[:, 0] > 10 * delta[:, -1]).all()


def test_batch_norm_trains_with_batch_statistics_and_evaluates_with_running_ones():
    model = _encoder(norm="batch", batch_norm_momentum=0.9)
    images = _images()
    variables = _init(model, images)
    block = variables["params"]["stage1_block0"]
    assert not block["norm2"]["scale"].any() and block["proj_norm"]["scale"].all()  # Goyal
    only = {"intermediates"}
    stem = lambda mdl, _: mdl.name in ("stem_conv", "stem_norm")  # noqa: E731

    train, updates = jax.jit(lambda v, x: model.apply(
        v, x, mutable=["batch_stats", *only], capture_intermediates=stem))(variables, images)
    conv = updates["intermediates"]["stem_conv"]["__call__"][0]
    stats = updates["batch_stats"]["stem_norm"]
    _close(stats["mean"], 0.1 * conv.mean((0, 1, 2)))  # from 0 toward the batch mean
    _close(stats["var"], 0.9 + 0.1 * conv.var((0, 1, 2)))  # from 1 toward the batch var
    normed = updates["intermediates"]["stem_norm"]["__call__"][0]
    _close(normed.mean((0, 1, 2)), np.zeros(8), atol=1e-4)

    # Not mutable: the running averages (here the initial 0 and 1) normalise.
    evaluated, caught = jax.jit(lambda v, x: model.apply(
        v, x, mutable=[*only], capture_intermediates=stem))(variables, images)
    _close(caught["intermediates"]["stem_norm"]["__call__"][0], conv / np.sqrt(1 + 1e-5))
    assert np.abs(np.asarray(evaluated[0] - train[0])).max() > 1e-2
    assert set(caught) == only  # batch_stats untouched
    pooled, tokens, mask = evaluated
    assert mask.all()
    _close(pooled, tokens.mean(1))

    group = _encoder()
    group_vars = _init(group, images)
    assert set(group_vars) == {"params"}
    out, group_updates = jax.jit(lambda v, x: group.apply(v, x, mutable=["batch_stats"]))(
        group_vars, images)
    assert not group_updates


@pytest.fixture(scope="module")
def one_device():
    """The global batch's outputs and statistics, on one device."""
    model = _encoder(norm="batch")
    images = _images()
    variables = _init(model, images)
    return model, variables, images, _train(model)(variables, images)


def test_jit_over_a_sharded_batch_normalises_over_the_global_batch(one_device):
    model, _, images, want = one_device
    mesh = make_mesh(ParallelConfig(data=2, fsdp=4, tensor=1))
    boxed = _init(model, images, boxed=True)
    shardings = param_shardings(mesh, boxed["params"])
    names = {n for box in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(
        x, nn.LogicallyPartitioned)) for n in getattr(box, "names", ()) if n}
    assert names <= {logical for logical, _ in LOGICAL_AXIS_RULES}
    # FSDP splits the output channels of kernels (16 on 4 devices).
    kernel = shardings["stage1_block0"]["conv2"]["kernel"]
    assert kernel.spec == PartitionSpec(None, None, None, "fsdp")
    variables = nn.meta.unbox(boxed)
    placed = {"params": jax.device_put(variables["params"], shardings),
              "batch_stats": variables["batch_stats"]}
    split = jax.device_put(images, batch_sharding(mesh))
    with sharding_context(mesh):
        got = _train(model)(placed, split)
    assert got[0][1].sharding.spec[0] == ("data", "fsdp")  # tokens stay split by example
    _close(got, want)


def _pmap(model, variables, images, valid=None):
    shard = lambda x: x.reshape(8, -1, *x.shape[1:])  # noqa: E731
    valid = jnp.ones(len(images), bool) if valid is None else valid

    def apply(variables, images, valid):
        out, updates = model.apply(variables, images, valid, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    out, stats = jax.pmap(apply, axis_name="batch", in_axes=(None, 0, 0))(
        variables, shard(images), shard(valid))
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out), stats


def test_pmap_averages_statistics_over_its_axis(one_device):
    model, variables, images, (want_out, want_stats) = one_device
    out, stats = _pmap(_encoder(norm="batch", batch_axis="batch"), variables, images)
    _close(out, want_out)
    _close(stats, jax.tree.map(lambda x: np.broadcast_to(x, (8, *x.shape)), want_stats))

    # Without the axis each device normalises with its own two examples.
    out, stats = _pmap(model, variables, images)
    mean = stats["stem_norm"]["mean"]
    assert np.abs(np.asarray(mean[0] - mean[-1])).max() > 1e-2
    assert np.abs(np.asarray(mean - want_stats["stem_norm"]["mean"])).max() > 1e-2
    assert np.abs(np.asarray(out[1] - want_out[1])).max() > 1e-2


def test_invalid_examples_leave_statistics_and_valid_outputs_alone(one_device):
    model, variables, images, _ = one_device
    valid = jnp.arange(B) < 5  # devices 3..7 of the pmap below hold none
    garbage = jnp.where(valid[:, None, None, None], images, 100.0 * _images(seed=1))
    train = _train(model)
    (out, stats) = train(variables, images, valid)
    got_out, got_stats = train(variables, garbage, valid)
    _close(got_stats, stats)
    _close(jax.tree.map(lambda x: x[:5], got_out), jax.tree.map(lambda x: x[:5], out))
    # ... equal to a batch of the valid examples alone.
    alone_out, alone_stats = train(variables, images[:5])
    _close(stats, alone_stats)
    _close(jax.tree.map(lambda x: x[:5], out), alone_out)
    # Under pmap the counts are summed, not the per-device means averaged (which weighs
    # each device alike and is NaN on a device without valid examples).
    pmapped = _encoder(norm="batch", batch_axis="batch")
    got_out, got_stats = _pmap(pmapped, variables, garbage, valid)
    _close(jax.tree.map(lambda x: x[0], got_stats), stats)
    _close(jax.tree.map(lambda x: x[:5], got_out), alone_out)
    # A batch with no valid example at all leaves the running averages as they were.
    trained = {"params": variables["params"], "batch_stats": stats}
    _, untouched = train(trained, garbage, jnp.zeros(B, bool))
    _close(untouched, stats)


def test_remat_changes_nothing_but_memory(one_device):
    _, variables, images, want = one_device
    _close(_train(_encoder(norm="batch", remat=True))(variables, images), want)


def test_adam_fits_random_labels_with_batch_norm():
    model = _encoder(norm="batch")
    images = _images()
    labels = jnp.asarray(np.random.default_rng(2).integers(0, 4, B))
    variables = _init(model, images)
    params = {"cnn": variables["params"], "head": jnp.zeros((16, 4))}
    optimizer = optax.adam(5e-2)

    @jax.jit
    def step(params, batch_stats, opt_state):
        def loss(params):
            (pooled, _, _), updates = model.apply(
                {"params": params["cnn"], "batch_stats": batch_stats}, images,
                mutable=["batch_stats"])
            logits = pooled @ params["head"]
            value = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return value, updates["batch_stats"]

        (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), batch_stats, opt_state, value

    batch_stats, opt_state, losses = variables["batch_stats"], optimizer.init(params), []
    for _ in range(20):
        params, batch_stats, opt_state, value = step(params, batch_stats, opt_state)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0], losses
    before = variables["batch_stats"]["stage1_block0"]["norm2"]["mean"]
    after = batch_stats["stage1_block0"]["norm2"]["mean"]
    assert np.isfinite(after).all() and np.abs(np.asarray(after - before)).max() > 1e-3


@pytest.mark.parametrize("kind, overrides, message", [
    ("inception", {}, "unknown CNN kind 'inception' .*'resnet' or 'vgg'"),
    ("resnet", {"norm": "layer"}, "unknown CNN norm 'layer' .*'group' or 'batch'"),
    ("resnet", {"stem": "huge"}, "unknown CNN stem 'huge' .*'small' or 'imagenet'"),
    ("vgg", {"pool": "cls"}, "unknown CNN pool 'cls' .*'mean' or 'map'"),
])
def test_unknown_settings_are_named(kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        _encoder(kind, **overrides).init(jax.random.key(0), _images(1))
