"""xresnet1d signal encoder: lengths and channels, the whole forward against the same
network written in NumPy (stem, blocks, ResNet-D shortcut, BatchNorm, pools), tokens as
time positions, unrecorded leads and absent examples, and what the config refuses."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.config import ConfigError, SignalCNNConfig
from mmjax.nn.cnn1d import SignalCNNEncoder, output_channels, token_count

B, LEADS = 6, 3
TINY = {"width": 8, "stages": (1, 2), "norm_groups": 4}


def _encoder(**overrides):
    return SignalCNNEncoder(SignalCNNConfig(**{**TINY, **overrides}))


def _signal(n=B, samples=100, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, samples, LEADS)) + np.linspace(-1, 1, n)[:, None, None],
                       jnp.float32)


def _init(model, signal):
    return nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), signal))


def _train(model, variables, signal, leads=None, valid=None):
    return model.apply(variables, signal, leads, valid, mutable=["batch_stats"])


@pytest.mark.parametrize("samples", [100, 99, 37])
@pytest.mark.parametrize("overrides", [{}, {"bottleneck": True, "pool": "mean"},
                                       {"stages": (1, 1, 1, 1), "kernel_size": 7}])
def test_shapes_follow_token_count_and_output_channels(samples, overrides):
    model = _encoder(**overrides)
    cfg = model.config
    signal = _signal(samples=samples)
    pooled, tokens, mask = model.apply(_init(model, signal), signal)
    channels = output_channels(cfg)
    assert tokens.shape == (B, token_count(cfg, samples), channels)
    assert mask.shape == tokens.shape[:2] and bool(mask.all())
    assert pooled.shape == (B, channels * (2 if cfg.pool == "concat" else 1))


# ---- The network in NumPy, from the initialised parameters.

def _conv(x, kernel, stride):
    """[B, N, C] * [k, C, F], symmetric padding k // 2, like PyTorch's Conv1d."""
    k = kernel.shape[0]
    x = np.pad(x, ((0, 0), (k // 2, k // 2), (0, 0)))
    out = (x.shape[1] - k) // stride + 1
    return np.stack([np.einsum("bkc,kcf->bf", x[:, i * stride:i * stride + k], kernel)
                     for i in range(out)], 1)


def _batch_norm(x, p):
    mean, var = x.mean((0, 1)), x.var((0, 1))
    return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _max_pool(x):  # kernel 3, stride 2, padding 1
    x = np.pad(x, ((0, 0), (1, 1), (0, 0)), constant_values=-np.inf)
    return np.stack([x[:, i:i + 3].max(1) for i in range(0, x.shape[1] - 2, 2)], 1)


def _avg_pool(x):  # kernel 2, stride 2, ceil mode
    return np.stack([x[:, i:i + 2].mean(1) for i in range(0, x.shape[1], 2)], 1)


def _block(x, p, stride):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    y = relu(_batch_norm(_conv(x, p["conv1"]["kernel"], stride), p["norm1"]))
    y = _batch_norm(_conv(y, p["conv2"]["kernel"], 1), p["norm2"])
    if stride != 1:
        x = _avg_pool(x)
    if "proj_conv" in p:
        x = _batch_norm(_conv(x, p["proj_conv"]["kernel"], 1), p["proj_norm"])
    return relu(x + y)


def _reference(params, signal, stages):
    x = np.asarray(signal, np.float64)
    for i in range(3):
        x = np.maximum(_batch_norm(_conv(x, params[f"stem_conv{i}"]["kernel"], 2 if i == 0 else 1),
                                   params[f"stem_norm{i}"]), 0)
    x = _max_pool(x)
    for i, depth in enumerate(stages):
        for j in range(depth):
            x = _block(x, params[f"stage{i}_block{j}"], 2 if i > 0 and j == 0 else 1)
    return np.concatenate([x.mean(1), x.max(1)], -1), x


@pytest.mark.parametrize("samples", [64, 61])
def test_forward_matches_the_network_written_in_numpy(samples):
    """Random norm scales (not the zero init) so every block's residual branch counts."""
    model = _encoder(norm="batch")
    signal = _signal(samples=samples)
    variables = _init(model, signal)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.5 + 0.5 *
                                                (p.ndim == 1), jnp.float32), variables["params"])
    (pooled, tokens, _), _ = _train(model, {**variables, "params": params}, signal)
    want_pooled, want_tokens = _reference(jax.tree.map(np.asarray, params), signal, TINY["stages"])
    np.testing.assert_allclose(tokens, want_tokens, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pooled, want_pooled, rtol=1e-4, atol=1e-4)


def test_each_block_starts_as_the_identity_of_its_shortcut():
    """The last norm's scale starts at zero (Goyal et al. 2017)."""
    model = _encoder(norm="batch")
    signal = _signal()
    variables = _init(model, signal)
    for name, block in variables["params"].items():
        if name.startswith("stage"):
            assert not np.asarray(block["norm2"]["scale"]).any(), name


def test_tokens_are_time_positions():
    """With running statistics (evaluation) a change at the end of the signal reaches
    only the last tokens: token i sees a window around its own time."""
    model = _encoder(norm="batch", stages=(1, 1))
    signal = _signal(samples=400)
    variables = _init(model, signal)
    changed = signal.at[:, -10:].add(5.0)
    _, before, _ = model.apply(variables, signal)
    _, after, _ = model.apply(variables, changed)
    moved = np.abs(np.asarray(after - before)).max(axis=(0, 2)) > 1e-6
    assert moved[-1] and not moved[: len(moved) // 2].any(), moved


def test_unrecorded_leads_and_absent_examples_change_nothing():
    model = _encoder(norm="batch")
    signal = _signal()
    variables = _init(model, signal)
    leads = jnp.asarray(np.random.default_rng(3).random((B, LEADS)) > 0.3)
    valid = jnp.arange(B) < 4
    garbage = jnp.where(leads[:, None, :], signal, 1e3)  # what an unrecorded lead holds
    garbage = jnp.where(valid[:, None, None], garbage, 1e3 * _signal(seed=5))
    (out, stats) = _train(model, variables, signal * leads[:, None, :], leads, valid)
    (got, got_stats) = _train(model, variables, garbage, leads, valid)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[:4], b[:4], atol=1e-5), out, got)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), stats, got_stats)
    # ... and the statistics are the valid examples' alone.
    (_, alone) = _train(model, variables, signal[:4] * leads[:4, None, :], leads[:4])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), stats, alone)


@pytest.mark.parametrize("assignment, message", [
    ("model.signal_cnn.kernel_size=4", "model.signal_cnn.kernel_size must be odd"),
    ("model.signal_cnn.stages=()", "model.signal_cnn.stages must be one or more"),
    ("model.signal_cnn.stages=(2,0)", "model.signal_cnn.stages must be one or more"),
    ("objectives.mae_modalities=(signal,)", "model.signal.encoder=transformer"),
])
def test_the_config_refuses_what_cannot_work(assignment, message):
    cfg = config_lib.Config()
    config_lib.override(cfg, "data.modalities=(signal,report)")
    config_lib.override(cfg, "objectives.contrastive_pairs=(signal-report)")
    config_lib.override(cfg, "model.signal.encoder=xresnet1d")
    config_lib.validate(cfg)
    config_lib.override(cfg, assignment)
    if assignment.startswith("objectives.mae"):
        config_lib.override(cfg, "objectives.mae=1.0")
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(cfg)


def test_batch_norm_marks_the_signal_cnn_and_mae_needs_the_transformer():
    cfg = config_lib.Config().model
    assert config_lib.has_patches(cfg, "signal")
    assert not config_lib.uses_batch_norm(cfg, ("signal",))
    cfg.signal.encoder = "xresnet1d"
    assert not config_lib.has_patches(cfg, "signal")
    assert config_lib.uses_batch_norm(cfg, ("signal",))
    assert not config_lib.uses_batch_norm(cfg, ("image",))
    cfg.signal_cnn.norm = "group"
    assert not config_lib.uses_batch_norm(cfg, ("signal",))
