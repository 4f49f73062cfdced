import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import (
    AudioConfig,
    ModelConfig,
    SignalCNNConfig,
    SignalConfig,
    TextConfig,
    VideoConfig,
    ViTConfig,
)
from mmjax.nn.attention import MultiHeadAttention
from mmjax.nn.audio import AudioEncoder
from mmjax.nn.encoders import VideoEncoder
from mmjax.nn.model import MultimodalModel

B, SIZE, FRAMES, SAMPLES, LENGTH, VOCAB, LABELS = 3, 16, 4, 100, 12, 50, 5
SMALL = {"width": 32, "depth": 1, "num_heads": 4, "mlp_dim": 64}


def _numpy_attention(params, x, context, key_mask):
    """Q = XW_Q, K = CW_K, V = CW_V, A = softmax(QK^T / sqrt(d_k)), O = AV W_O."""
    def project(name, inputs):
        p = params[name]
        return np.einsum("bld,dhk->bhlk", inputs, p["kernel"]) + p["bias"][None, :, None, :]

    q, k, v = project("query", x), project("key", context), project("value", context)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = weights @ v  # [B, H, Lq, dk]
    return np.einsum("bhlk,hkd->bld", heads, params["out"]["kernel"]) + params["out"]["bias"]


def test_cross_attention_matches_the_textbook_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    context = rng.normal(size=(2, 7, 16)).astype(np.float32)
    key_mask = np.ones((2, 7), bool)
    key_mask[1, 4:] = False
    module = MultiHeadAttention(num_heads=4)
    params = nn.meta.unbox(module.init(jax.random.key(0), x, context, key_mask)["params"])
    got = module.apply({"params": params}, x, context, key_mask)
    want = _numpy_attention(jax.tree.map(np.asarray, params), x, context, key_mask)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _config(fusion="late", video_attention="joint", image_pool="cls", signal="transformer"):
    return ModelConfig(
        image=ViTConfig(patch_size=4, pool=image_pool, **SMALL),
        text=TextConfig(**SMALL),
        video=VideoConfig(tubelet_frames=2, patch_size=8, attention=video_attention, **SMALL),
        signal=SignalConfig(patch_size=25, encoder=signal, **SMALL),
        signal_cnn=SignalCNNConfig(stages=(1, 1), width=8, norm="group", norm_groups=4),
        fusion=dataclasses.replace(ModelConfig().fusion, kind=fusion, width=32, depth=1),
        embed_dim=16,
    )


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, LENGTH), bool)
    mask[:, 8:] = False
    return {
        "image": jnp.asarray(rng.normal(size=(B, SIZE, SIZE, 1)), jnp.float32),
        "video": jnp.asarray(rng.normal(size=(B, FRAMES, SIZE, SIZE, 1)), jnp.float32),
        "signal": jnp.asarray(rng.normal(size=(B, SAMPLES, 12)), jnp.float32),
        "signal_leads": jnp.ones((B, 12), bool),
        "text": jnp.asarray(rng.integers(5, VOCAB, (B, LENGTH)), jnp.int32),
        "text_mask": jnp.asarray(mask),
        **{f"has_{m}": jnp.ones(B, bool) for m in ("image", "video", "signal", "report")},
    }


MODALITIES = ("image", "video", "signal", "report")


def _init(cfg, modalities=MODALITIES):
    """The model, its boxed variables, and a jitted apply (eager dispatch is slow)."""
    model = MultimodalModel(cfg, VOCAB, modalities, LABELS)
    variables = jax.jit(model.init)(jax.random.key(0), _batch())
    params = nn.meta.unbox(variables["params"])
    apply = jax.jit(lambda batch: model.apply({"params": params}, batch))
    return model, variables, apply


@pytest.mark.parametrize("fusion,video_attention,image_pool", [
    ("late", "joint", "cls"), ("early", "factorised", "map"), ("hybrid", "joint", "mean"),
    ("bottleneck", "factorised", "cls"), ("decision", "joint", "map")])
def test_every_encoder_fusion_and_head_has_the_right_shapes(fusion, video_attention, image_pool):
    cfg = _config(fusion, video_attention, image_pool)
    _, _, apply = _init(cfg)
    out = apply(_batch())
    for modality in MODALITIES:
        assert out["embeddings"][modality].shape == (B, cfg.embed_dim)
        np.testing.assert_allclose(jnp.linalg.norm(out["embeddings"][modality], axis=-1), 1,
                                   atol=1e-5)
    if fusion == "decision":  # every modality's embedding, for its own head
        assert out["fused"][0].shape == (B, len(MODALITIES), cfg.embed_dim)
        assert "matching" not in out
    else:
        fused_width = cfg.embed_dim if fusion == "late" else cfg.fusion.width
        assert out["fused"].shape == (B, fused_width) and out["matching"].shape == (B, 2)
    assert out["diagnosis"].shape == (B, LABELS) and out["risk"].shape == (B,)
    assert out["mlm"].shape == (B, LENGTH, VOCAB)
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(out))


def test_every_parameter_has_logical_axis_names():
    _, variables, _ = _init(_config("hybrid"))
    unnamed = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
        if not isinstance(leaf, nn.Partitioned) and np.ndim(leaf) >= 2
    ]
    assert not unnamed, unnamed


def test_padding_tokens_do_not_change_the_text_embedding():
    _, _, apply = _init(_config(), ("image", "report"))
    batch = _batch()
    other = dict(batch, text=batch["text"].at[:, 8:].set(7))
    a, b = apply(batch)["embeddings"]["report"], apply(other)["embeddings"]["report"]
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("attention", ["joint", "factorised"])
def test_padded_frames_do_not_change_the_tubelet_embedding(attention):
    cfg = VideoConfig(tubelet_frames=2, patch_size=4, width=16, depth=1, num_heads=2,
                      mlp_dim=32, attention=attention)
    encoder = VideoEncoder(cfg)
    video = jax.random.normal(jax.random.key(0), (2, 8, 8, 8, 1))
    frame_mask = jnp.arange(8)[None] < jnp.array([[4], [8]])
    params = jax.jit(encoder.init)(jax.random.key(1), video, frame_mask)
    encode = jax.jit(lambda v: encoder.apply(params, v, frame_mask)[0])
    pooled = encode(video)
    np.testing.assert_allclose(encode(video.at[0, 4:].set(9.0)), pooled, atol=1e-5)
    assert np.abs(encode(video.at[0, 1].add(3.0))[0] - pooled[0]).max() > 1e-3


@pytest.mark.parametrize("encoder", ["spectrogram", "waveform"])
def test_audio_after_its_length_is_ignored(encoder):
    """Samples past `audio_length` (padding, or anything a bad reader left there) change no
    audio embedding; a real sample does."""
    cfg = AudioConfig(encoder=encoder, mel_bins=16, patch_size=4, width=16, depth=1,
                      num_heads=2, mlp_dim=32, window_ms=32, hop_ms=8, waveform_patch=20)
    encoder = AudioEncoder(cfg, rate_hz=1000.0)
    audio = jax.random.normal(jax.random.key(0), (2, 1000))
    lengths = jnp.array([600, 1000])
    params = jax.jit(encoder.init)(jax.random.key(1), audio, lengths)
    encode = jax.jit(lambda x: encoder.apply(params, x, lengths)[0])
    pooled = encode(audio)
    garbage = encode(audio.at[0, 600:].set(5.0))
    np.testing.assert_allclose(garbage, pooled, atol=1e-5)
    assert np.abs(encode(audio.at[0, 300].add(3.0))[0] - pooled[0]).max() > 1e-3


@pytest.mark.parametrize("fusion,missing,signal", [
    *[(kind, "video", "transformer") for kind in ("late", "decision", "early", "hybrid",
                                                  "bottleneck")],
    ("hybrid", "signal", "xresnet1d"), ("bottleneck", "signal", "xresnet1d")])
def test_a_missing_modality_does_not_leak_into_the_result(fusion, missing, signal):
    """What the heads return for an example without `missing` ignores its placeholder."""
    _, _, apply = _init(_config(fusion, signal=signal))
    batch = dict(_batch(), **{f"has_{missing}": jnp.array([True, False, True])})
    garbage = dict(batch, **{missing: batch[missing] * 100 + 5})
    a, b = apply(batch), apply(garbage)
    for head in ("diagnosis", "risk"):
        np.testing.assert_allclose(a[head][1], b[head][1], atol=1e-5, err_msg=head)
        # present, it matters
        assert not np.allclose(a[head][0], b[head][0], atol=1e-4), head
    for modality in set(MODALITIES) - {missing}:
        np.testing.assert_array_equal(a["embeddings"][modality], b["embeddings"][modality])


def test_under_hybrid_fusion_the_image_changes_the_text_side():
    _, _, apply = _init(_config("hybrid"), ("image", "report"))
    batch = _batch()
    other = dict(batch, image=-batch["image"])
    a, b = apply(batch), apply(other)
    np.testing.assert_array_equal(a["embeddings"]["report"], b["embeddings"]["report"])
    assert not np.allclose(a["fused"], b["fused"], atol=1e-4)


def test_remat_changes_no_result():
    cfg = _config("early")
    model, variables, _ = _init(cfg, ("image", "report"))
    params = nn.meta.unbox(variables["params"])
    remat_model = MultimodalModel(dataclasses.replace(cfg, remat=True), VOCAB,
                                  ("image", "report"), LABELS)

    def loss(model):
        return lambda p: model.apply({"params": p}, _batch())["fused"].sum()

    grads = [jax.jit(jax.grad(loss(m)))(params) for m in (model, remat_model)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_embeddings():
    cfg = dataclasses.replace(_config(), dtype="bfloat16")
    _, variables, apply = _init(cfg)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
    out = apply(_batch())
    assert out["embeddings"]["image"].dtype == jnp.float32


def test_params_carry_no_weak_types():
    """A weak-typed parameter makes the train step compile more than once."""
    _, variables, _ = _init(_config())
    assert not any(leaf.weak_type for leaf in jax.tree.leaves(nn.meta.unbox(variables["params"])))


@pytest.mark.parametrize("modality,num_patches", [("image", 16), ("video", 8), ("signal", 4)])
def test_mae_sees_only_the_visible_patches(modality, num_patches):
    cfg = _config()
    model = MultimodalModel(cfg, VOCAB, MODALITIES, LABELS)
    keep = jnp.tile(jnp.arange(0, num_patches, 2)[None], (B, 1))  # every other patch visible
    batch = _batch()
    variables = jax.jit(lambda rng: model.init(rng, modality, batch, keep, method=model.mae))(
        jax.random.key(0))

    @jax.jit
    def mae(batch):
        return model.apply(variables, modality, batch, keep, method=model.mae)

    predictions, targets = mae(batch)
    assert predictions.shape == targets.shape and targets.shape[1] == num_patches
    # Overwrite the hidden patches: nothing the model outputs may change.
    hidden = np.ones(targets.shape[1], bool)
    hidden[::2] = False
    noise = jnp.asarray(np.random.default_rng(1).normal(size=batch[modality].shape), jnp.float32)
    changed = _with_patches_replaced(batch, modality, cfg, hidden, noise)
    np.testing.assert_allclose(mae(changed)[0], predictions, atol=1e-5)
    assert not np.allclose(mae(changed)[1], targets)
    visible_changed = _with_patches_replaced(batch, modality, cfg, ~hidden, noise)
    assert not np.allclose(mae(visible_changed)[0], predictions, atol=1e-4)


def _with_patches_replaced(batch, modality, cfg, which, noise):
    """The batch with the patches flagged in `which` replaced by noise."""
    from mmjax.nn.embed import patchify

    patch = {"image": (4, 4), "video": (2, 8, 8), "signal": (25,)}[modality]
    flags = np.zeros(batch[modality].shape[1:-1], bool)
    grid = [s // p for s, p in zip(flags.shape, patch, strict=True)]
    flat = np.zeros(int(np.prod(grid)), bool)
    flat[which] = True
    expanded = flat.reshape(grid)
    for axis, p in enumerate(patch):
        expanded = np.repeat(expanded, p, axis=axis)
    replaced = jnp.where(expanded[None, ..., None], noise, batch[modality])
    assert patchify(replaced, patch).shape[1] == len(flat)
    return dict(batch, **{modality: replaced})


@pytest.mark.parametrize("memory", ["tokens", "pooled", "both"])
def test_report_memory_holds_tokens_or_pooled_vectors_of_present_modalities(memory):
    """model.decoder.memory: per modality its encoder's tokens, its pooled vector (through
    its own projection) or both, in that order; an absent modality is masked out whole."""
    cfg = _config()
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, memory=memory))
    model = MultimodalModel(cfg, VOCAB, ("image", "signal", "report"), LABELS)
    batch = dict(_batch(), has_signal=jnp.array([True, False, True]))
    variables = jax.jit(lambda rng: model.init(rng, batch, method=model.report_logits))(
        jax.random.key(0))
    context, mask = jax.jit(lambda b: model.apply(variables, b, method=model.report_context))(
        batch)

    def project(name, x):
        p = nn.meta.unbox(variables["params"][name])
        return np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p.get("bias", 0.0))

    want = []
    for m in ("image", "signal"):
        pooled, tokens, _ = model.apply(variables, m, batch, method=model.encode)
        if memory != "pooled":
            want.append(project(f"memory_{m}", tokens))
        if memory != "tokens":
            want.append(project(f"memory_{m}_pooled", pooled[:, None]))
    want = np.concatenate(want, 1)
    np.testing.assert_allclose(context, want, rtol=1e-5, atol=1e-5)
    image_tokens = (SIZE // 4) ** 2
    per_modality = {"tokens": (image_tokens, SAMPLES // 25), "pooled": (1, 1),
                    "both": (image_tokens + 1, SAMPLES // 25 + 1)}[memory]
    assert context.shape[1] == sum(per_modality)
    signal_rows = np.asarray(mask)[:, per_modality[0]:]
    assert signal_rows[[0, 2]].all() and not signal_rows[1].any()


def test_report_decoder_is_causal_and_reads_present_modalities_only():
    model = MultimodalModel(_config(), VOCAB, ("image", "report"), LABELS)
    batch = _batch()
    variables = jax.jit(lambda rng: model.init(rng, batch, method=model.report_logits))(
        jax.random.key(0))
    logits = jax.jit(lambda b: model.apply(variables, b, method=model.report_logits))
    base = logits(batch)
    assert base.shape == (B, LENGTH, VOCAB)
    later_token = dict(batch, text=batch["text"].at[:, 6].set(9))
    np.testing.assert_allclose(logits(later_token)[:, :6], base[:, :6], atol=1e-5)
    other_image = dict(batch, image=-batch["image"])
    assert not np.allclose(logits(other_image), base, atol=1e-4)
    absent = dict(batch, has_image=jnp.zeros(B, bool))
    np.testing.assert_allclose(logits(dict(absent, image=-batch["image"])), logits(absent),
                               atol=1e-5)
