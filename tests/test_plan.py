"""The planner: exact parameter counts, FLOPs against 6·N·D and XLA, scaling, the table."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from mmjax import plan as plan_lib
from mmjax.config import (
    Config,
    DataConfig,
    FusionConfig,
    ModelConfig,
    SignalConfig,
    TextConfig,
    VideoConfig,
    ViTConfig,
)
from mmjax.data import shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.nn.model import MultimodalModel
from mmjax.plan import InputShapes

ALL = ("image", "video", "signal", "report")
SHAPES = InputShapes(image_size=16, channels=1, frames=4, signal_samples=100, text_len=12,
                     vocab_size=50, num_labels=5)


def _sized(width, depth=2):
    return {"width": width, "depth": depth, "num_heads": 4, "mlp_dim": 4 * width}


def _tiny_config(fusion="hybrid"):
    return ModelConfig(
        image=ViTConfig(patch_size=4, pool="map", **_sized(32, 1)),
        text=TextConfig(**_sized(32, 1)),
        video=VideoConfig(tubelet_frames=2, patch_size=8, attention="factorised",
                          **_sized(32, 1)),
        signal=SignalConfig(patch_size=25, pool="cls", **_sized(32, 1)),
        fusion=FusionConfig(kind=fusion, **_sized(32, 1)),
        embed_dim=16,
    )


def _leaf_sizes(tree) -> int:
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree))


def test_parameter_counts_equal_a_real_init():
    cfg = _tiny_config()
    model = MultimodalModel(cfg, SHAPES.vocab_size, ALL, SHAPES.num_labels)
    batch = plan_lib.example_batch(SHAPES, ALL, batch_size=2)
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]

    counts = plan_lib.count_params(cfg, SHAPES, ALL)
    contrastive = plan_lib.count_params(cfg, SHAPES, ALL, "contrastive")

    assert counts["total"] == _leaf_sizes(params)
    for m in ALL:
        assert counts[f"encoders_{m}"] == contrastive[f"encoders_{m}"] == _leaf_sizes(
            params[f"encoders_{m}"])
    assert counts["projections"] == sum(_leaf_sizes(params[f"proj_{m}"]) for m in ALL)
    assert counts["fusion"] == _leaf_sizes(params["fusion"]) > 0
    heads = ("diagnosis", "risk", "matching", "mlm")
    assert counts["heads"] == sum(_leaf_sizes(params[h]) for h in heads)
    # Initialising through `contrastive` creates neither fusion nor heads.
    assert contrastive["total"] == counts["total"] - counts["fusion"] - counts["heads"]


def test_a_plain_text_transformer_follows_6_n_d():
    """Training a dense transformer costs 6 FLOPs per non-embedding parameter per token
    plus attention's 12·depth·L·D per token, a relative L/(6·D); at L = 32, D = 128
    that is 4%, so the rule must hold within 10%."""
    width, length, vocab = 128, 32, 64
    cfg = ModelConfig(text=TextConfig(**_sized(width, 4)), embed_dim=64)
    shapes = InputShapes(text_len=length, vocab_size=vocab)
    params = plan_lib.count_params(cfg, shapes, ("report",), "contrastive")
    embeddings = vocab * width + length * width  # token and position tables: lookups
    n = params["encoders_report"] - embeddings

    flops = plan_lib.flops_per_example(cfg, shapes, ("report",), "contrastive")
    flops = flops["encoders_report"]

    assert flops.total == pytest.approx(6 * n * length, rel=0.10)
    # Without attention scores it is 6·N·D up to biases and norms (<1% of N here).
    assert flops.dense == pytest.approx(6 * n * length, rel=0.01)
    assert flops.attention / flops.dense == pytest.approx(length / (6 * width), rel=0.01)


@pytest.mark.parametrize("modalities,method", [
    (("image", "report"), "all"), (("video", "signal"), "contrastive")])
def test_analytic_forward_flops_agree_with_xla(modalities, method):
    """XLA also counts elementwise work (LayerNorm, softmax, GELU, biases: O(L·D) and
    O(H·L²) against the matmuls' O(L·D²)), so at width 128 it reads 1-5% above the
    analytic matmul count and never below it; 10% is the tolerance."""
    cfg = ModelConfig(
        image=ViTConfig(patch_size=8, pool="map", **_sized(128)),
        text=TextConfig(**_sized(128)),
        video=VideoConfig(patch_size=8, attention="factorised", **_sized(128)),
        signal=SignalConfig(pool="cls", **_sized(128)),
        fusion=FusionConfig(kind="hybrid", **_sized(128)),
        embed_dim=64)
    shapes = InputShapes(image_size=32, frames=8, text_len=64, vocab_size=256, num_labels=5)

    analytic = plan_lib.forward_flops(cfg, shapes, modalities, method, include_mlm=True)
    xla = plan_lib.compiled_flops(cfg, shapes, modalities, method)

    assert analytic["total"].total <= xla <= 1.10 * analytic["total"].total


def test_flops_scale_with_depth_and_length():
    cfg = ModelConfig(image=ViTConfig(**_sized(64, 2)), text=TextConfig(**_sized(64, 2)))
    shapes = InputShapes(image_size=32, text_len=64)
    modalities = ("image", "report")

    def flops(model_cfg, input_shapes):
        return plan_lib.flops_per_example(model_cfg, input_shapes, modalities)

    base = flops(cfg, shapes)
    deeper = flops(dataclasses.replace(
        cfg, image=ViTConfig(**_sized(64, 4)), text=TextConfig(**_sized(64, 4))), shapes)
    longer = flops(cfg, dataclasses.replace(shapes, text_len=128))

    # The patch embedding does not deepen; everything else doubles.
    assert deeper["encoders_image"].total / base["encoders_image"].total == pytest.approx(
        2, rel=0.05)
    assert deeper["encoders_report"].total == 2 * base["encoders_report"].total
    assert longer["encoders_report"].attention == 4 * base["encoders_report"].attention
    assert longer["encoders_report"].dense == 2 * base["encoders_report"].dense
    assert longer["encoders_report"].total > 2 * base["encoders_report"].total


def test_factorised_video_attends_within_frames_and_positions():
    width, depth = 64, 2
    video = VideoConfig(tubelet_frames=2, patch_size=8, **_sized(width, depth))
    shapes = InputShapes(image_size=32, frames=8)
    times, space = 8 // 2, (32 // 8) ** 2

    def attention(kind):
        cfg = ModelConfig(video=dataclasses.replace(video, attention=kind))
        return plan_lib.forward_flops(cfg, shapes, ("video",))["encoders_video"].attention

    assert attention("factorised") == 4 * width * depth * (times * space**2 + space * times**2)
    assert attention("joint") == 4 * width * depth * (times * space) ** 2


def test_format_plan_names_every_module_and_a_total():
    cfg = Config(name="tiny", data=DataConfig(modalities=("image", "report")),
                 model=_tiny_config("early"))
    result = plan_lib.plan(cfg, dataclasses.replace(SHAPES, text_len=16))

    text = plan_lib.format_plan(result)

    for module in ("encoders_image", "encoders_report", "projections", "fusion", "heads"):
        assert module in result["params"] and module in result["flops"]
        assert any(line.startswith(module) for line in text.splitlines())
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "100.0%" in total and f"{result['flops']['total'].total / 1e9:.4f}" in total
    assert "MFU" in text


def test_input_shapes_come_from_the_manifest_and_the_tokenizer(tmp_path):
    fields = shards.field_specs({"image": (48, 48, 3), "video": (16, 48, 48, 3),
                                 "signal": (1000, 12), "report": ()})
    manifest = shards.Manifest("toy", fields, ["a", "b", "c"], {}, {"signal_rate_hz": 100})
    (tmp_path / shards.MANIFEST).write_text(manifest.to_json())
    tokenizer = tokenizer_lib.train(["no acute findings", "mild cardiomegaly"], 64)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    cfg = Config(data=DataConfig(path=str(tmp_path), max_text_len=40, video_frames=8,
                                 signal_seconds=2.5))

    shapes = plan_lib.input_shapes(cfg)

    assert shapes == InputShapes(image_size=48, channels=3, frames=8, signal_samples=250,
                                 text_len=40, vocab_size=tokenizer.get_vocab_size(),
                                 num_labels=3)
    fallback = InputShapes(image_size=24)
    assert plan_lib.input_shapes(Config(), fallback) == dataclasses.replace(
        fallback, text_len=Config().data.max_text_len)


def test_base_presets_have_vit_b16_and_bert_base_sizes():
    """ViT-B/16 at 224 px: timm's vit_base_patch16_224 without its head has 85,798,656
    parameters, one position row more (its CLS position) than ours: 85,797,888.
    BERT-base's encoder without embeddings and pooler: 12 x 7,087,872 = 85,054,464."""
    from mmjax.config import ModelConfig, TextConfig, ViTConfig, sized
    from mmjax.plan import InputShapes, count_params

    model_cfg = ModelConfig(image=sized(ViTConfig, "base", patch_size=16),
                            text=sized(TextConfig, "base", norm="post"))
    shapes = InputShapes(image_size=224, channels=3, text_len=16, vocab_size=8)
    counts = count_params(model_cfg, shapes, ("image", "report"), method="contrastive")
    assert counts["encoders_image"] == 85_797_888
    embeddings = 8 * 768 + 16 * 768  # our tiny vocab and 16 positions
    assert counts["encoders_report"] - embeddings == 85_054_464


def test_weight_memory_per_device_matches_a_real_sharded_state(smoke_dataset):
    """The planner's per-device bytes of parameters and Adam moments on a 2x4 (data x fsdp)
    mesh equal what the trainer's state holds on each of 8 real devices, and the flags name
    what no rule splits; planned on 64 devices with fsdp 16, the weights shrink ~4-fold."""
    from conftest import tiny_config

    from mmjax.train.setup import build, open_input

    cfg = tiny_config(smoke_dataset)
    cfg.parallel.data, cfg.parallel.fsdp = 2, 4
    data = open_input(cfg)
    run = build(cfg, data.define_model(cfg), data.batches[0])
    device = jax.devices()[0]

    def on_device(tree) -> int:
        return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
                   for shard in leaf.addressable_shards if shard.device == device)

    shapes = plan_lib.input_shapes(cfg)
    memory = plan_lib.weight_memory(cfg, shapes, 8, method="contrastive",
                                    min_unsharded_bytes=0)
    params = {k: v for k, v in run.state.params.items() if k != "log_variances"}
    assert memory["params"] == on_device(params)
    counts = [x for x in jax.tree.leaves(run.state.opt_state) if x.dtype == np.int32]
    assert memory["optimizer"] == on_device(run.state.opt_state) - on_device(counts)
    # Whole on every device: the scalars and the biases of dimensions split over `tensor`.
    assert memory["unsharded"] and all(p.endswith("bias") or p.startswith("logit_")
                                       for p in memory["unsharded"]), memory["unsharded"]
    cfg.parallel.data, cfg.parallel.fsdp = 4, 16
    wide = plan_lib.weight_memory(cfg, shapes, 64, method="contrastive")
    assert wide["params"] < memory["params"] / 3 and wide["mesh"]["fsdp"] == 16


def test_activation_memory_is_a_lower_bound_that_scales_like_xlas(smoke_dataset):
    """Against XLA's buffer assignment of the compiled train step on one CPU device: the
    planner's activations (encoder blocks and contrastive logits; heads left out) stay
    under XLA's temporaries but within 2x of them, and grow with the batch as they do."""
    from conftest import tiny_config

    from mmjax.train.setup import build, open_input

    cfg = tiny_config(smoke_dataset)
    shapes, measured = plan_lib.input_shapes(cfg), {}
    for batch in (32, 64):
        cfg.train.batch_size = batch
        data = open_input(cfg)
        run = build(cfg, data.define_model(cfg), data.batches[0],
                    jax.devices()[:1])
        compiled, _ = run.compile(run.to_device(data.batches[0]))
        measured[batch] = (compiled.memory_analysis().temp_size_in_bytes,
                           plan_lib.activation_memory(cfg, shapes, 1)["total"])
    for xla, planned in measured.values():
        assert xla / 2 < planned < xla, (xla, planned)
    xla_growth = measured[64][0] / measured[32][0]
    assert abs(measured[64][1] / measured[32][1] - xla_growth) < 0.15 * xla_growth
