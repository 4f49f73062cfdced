"""Frame + temporal video encoders: padded frames are invisible, order matters, they learn."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.config import VideoConfig, ViTConfig
from mmjax.nn.encoders import ViTEncoder
from mmjax.nn.temporal import POOLS, FrameVideoEncoder, TemporalEncoder

VIT = ViTConfig(patch_size=4, width=16, depth=1, num_heads=2, mlp_dim=32)
WIDTH, FRAMES, SIZE = 16, 6, 8
# (temporal, pool): every temporal model, the RNNs by their last real frame.
KINDS = [("gru", "last"), ("lstm", "last"), ("transformer", "mean"), ("transformer", "cls")]
RNNS = KINDS[:2]
TRAINED = KINDS[:3]


def _config(temporal, pool, depth=2):
    return VideoConfig(width=WIDTH, depth=depth, num_heads=2, mlp_dim=32, encoder="frames",
                       temporal=temporal, pool=pool)


def _video(seed, batch=2, frames=FRAMES, channels=3):
    return jax.random.normal(jax.random.key(seed), (batch, frames, SIZE, SIZE, channels))


def _mask(lengths, frames=FRAMES):
    return jnp.arange(frames)[None] < jnp.asarray(lengths)[:, None]


def _random_params(module, *inputs, seed=0):
    """Parameters drawn in numpy much as init draws them (compiling init would take longer
    than the tests): kernels ~ N(0, 1 / fan-in), learned positions and tokens ~ N(0, 0.02),
    biases zero, norm scales one."""
    shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("bias", "scale"):
            return np.full(leaf.shape, float(name == "scale"), np.float32)
        std = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.02
        return (std * rng.normal(size=leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _jit(fn):
    """jax.jit without LLVM optimisation: these tests check values, and compile faster."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0,
                                         "xla_llvm_disable_expensive_passes": True})


@functools.cache
def _model(kind):
    """The encoder, random parameters and a jitted apply, built once per kind."""
    encoder = FrameVideoEncoder(_config(*kind), ViTEncoder(VIT))
    params = _random_params(encoder, _video(0))
    return encoder, params, _jit(lambda p, v, m=None: encoder.apply({"params": p}, v, m))


@pytest.mark.parametrize("temporal, pool",
                         [(t, pool) for t, pools in POOLS.items() for pool in pools])
def test_shapes(temporal, pool):
    encoder = FrameVideoEncoder(_config(temporal, pool), ViTEncoder(VIT))
    mask = _mask([4, 6])
    (pooled, tokens, out_mask), _ = jax.eval_shape(encoder.init_with_output,
                                                   jax.random.key(0), _video(0), mask)
    assert pooled.shape == (2, WIDTH)
    assert tokens.shape == (2, FRAMES, WIDTH)
    assert out_mask.shape == (2, FRAMES) and out_mask.dtype == bool


@pytest.mark.parametrize("kind", KINDS)
def test_padded_frames_are_ignored(kind):
    _, params, apply = _model(kind)
    mask, video = _mask([4, 6]), _video(1)
    pooled, tokens, out_mask = apply(params, video, mask)
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(tokens[0, 4:], 0)
    garbage = video.at[0, 4:].set(100 * _video(2, batch=1, frames=2)[0])
    pooled_g, tokens_g, _ = apply(params, garbage, mask)
    np.testing.assert_allclose(pooled_g, pooled, atol=1e-6)
    np.testing.assert_allclose(tokens_g[:, :4], tokens[:, :4], atol=1e-6)
    np.testing.assert_allclose(tokens_g[1], tokens[1], atol=1e-6)
    # A real frame does count.
    changed = video.at[0, 3].set(_video(3, batch=1, frames=1)[0, 0])
    assert np.abs(apply(params, changed, mask)[0][0] - pooled[0]).max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_clip_encodes_as_it_would_alone(kind):
    _, params, apply = _model(kind)
    video = _video(4)
    pooled, tokens, _ = apply(params, video, _mask([3, 6]))
    if kind[0] == "transformer":  # the same weights, the table cut to the 3 rows used
        temporal = dict(params["temporal"], pos_embed={"pos": params["temporal"]["pos_embed"][
            "pos"][:3]})
        params = dict(params, temporal=temporal)
    alone, alone_tokens, alone_mask = apply(params, video[:1, :3])
    assert alone_mask.shape == (1, 3) and alone_mask.all()
    np.testing.assert_allclose(alone[0], pooled[0], atol=1e-5)
    np.testing.assert_allclose(alone_tokens[0], tokens[0, :3], atol=1e-5)


@pytest.mark.parametrize("kind", RNNS)
def test_rnn_frame_order_matters(kind):
    _, params, apply = _model(kind)
    mask, video = _mask([4, 6]), _video(5)
    reversed_ = video.at[0, :4].set(video[0, 3::-1])
    pooled = apply(params, video, mask)[0]
    assert np.abs(apply(params, reversed_, mask)[0][0] - pooled[0]).max() > 1e-3


def _bright_square_clips(n, rng):
    """Noise clips with a bright square in one frame; label 1 when it is in the first half."""
    video = 0.1 * rng.normal(size=(n, FRAMES, SIZE, SIZE, 1)).astype(np.float32)
    when = rng.integers(0, FRAMES, n)
    rows, cols = rng.integers(0, SIZE - 3, (2, n))
    for i in range(n):
        video[i, when[i], rows[i]:rows[i] + 4, cols[i]:cols[i] + 4] += 2.0
    return jnp.asarray(video), jnp.asarray(when < FRAMES // 2, jnp.int32)


class _Classifiers(nn.Module):
    """A classifier per temporal model, side by side. Their parameters are disjoint and Adam
    is per parameter, so one step on the summed losses trains each as it would alone (and
    compiles once)."""

    @nn.compact
    def __call__(self, video):
        return {t: nn.Dense(2, name=f"head_{t}")(FrameVideoEncoder(
            _config(t, pool, depth=1), ViTEncoder(VIT), name=t)(video)[0]) for t, pool in TRAINED}


def test_learns_when_a_square_appears():
    video, labels = _bright_square_clips(64, np.random.default_rng(0))
    model, tx = _Classifiers(), optax.adam(5e-3)
    params = _random_params(model, video)

    @_jit
    def step(params, opt_state):
        def loss_fn(p):
            losses = {t: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                      for t, logits in model.apply({"params": p}, video).items()}
            return sum(losses.values()), losses

        (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, losses

    opt_state, history = tx.init(params), []
    for _ in range(30):
        params, opt_state, losses = step(params, opt_state)
        history.append(losses)
    for temporal, _ in TRAINED:
        losses = np.array([float(h[temporal]) for h in history])
        print(temporal, np.round(losses[::3], 3))
        assert np.isfinite(losses).all()
        assert losses[-3:].mean() < 0.5 * losses[0], (temporal, losses)


def test_one_frame_encoder_for_every_frame():
    params = _model(KINDS[0])[1]
    assert set(params) == {"frame_encoder", "frame_proj", "temporal"}
    single = jax.eval_shape(ViTEncoder(VIT).init, jax.random.key(0),
                            jnp.zeros((1, SIZE, SIZE, 3)))["params"]
    assert jax.tree.map(jnp.shape, params["frame_encoder"]) == jax.tree.map(
        jnp.shape, nn.meta.unbox(single))


class _ValidRecorder(nn.Module):
    """A stand-in BatchNorm CNN: records the `valid` it is given."""

    @nn.compact
    def __call__(self, images, valid=None):
        self.sow("intermediates", "valid", valid)
        pooled = nn.Dense(WIDTH)(images.mean((1, 2)))
        return pooled, pooled[:, None], jnp.ones((images.shape[0], 1), bool)


def test_frame_encoders_that_take_valid_get_the_frame_mask():
    encoder = FrameVideoEncoder(_config("gru", "last", depth=1), _ValidRecorder())
    video, mask = _video(6), _mask([2, 5])
    apply = _jit(lambda p: encoder.apply({"params": p}, video, mask, mutable="intermediates"))
    _, state = apply(_random_params(encoder, video, mask))
    (valid,) = state["intermediates"]["frame_encoder"]["valid"]
    np.testing.assert_array_equal(valid, mask.reshape(-1))


@pytest.mark.parametrize("temporal, pool, match", [
    ("conv", "mean", "'conv'.*gru, lstm, transformer"),
    ("gru", "cls", "'cls'.*last, mean, map"),
    ("transformer", "max", "'max'"),
])
def test_bad_config_is_named(temporal, pool, match):
    encoder = FrameVideoEncoder(_config(temporal, pool), ViTEncoder(VIT))
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(encoder.init, jax.random.key(0), _video(0))


def test_temporal_transformer_needs_width_features():
    features = jnp.zeros((2, FRAMES, WIDTH + 1))
    with pytest.raises(ValueError, match="width 16"):
        jax.eval_shape(TemporalEncoder(_config("transformer", "mean")).init,
                       jax.random.key(0), features)
    pooled, _, _ = jax.eval_shape(TemporalEncoder(_config("gru", "last")).init_with_output,
                                  jax.random.key(0), features)[0]
    assert pooled.shape == (2, WIDTH)
