"""The planner: parameter counts equal to what training initialises (every experiment
file), FLOPs against 6·N·D and XLA, scaling, the table, shapes, memory."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from conftest import REPO

from mmjax import cli
from mmjax import config as config_lib
from mmjax import plan as plan_lib
from mmjax.config import (
    Config,
    ConfigError,
    DataConfig,
    DecoderConfig,
    FusionConfig,
    ModelConfig,
    ObjectivesConfig,
    SignalConfig,
    TextConfig,
    VideoConfig,
    ViTConfig,
)
from mmjax.data import shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.nn import build
from mmjax.objectives.compose import Vocab
from mmjax.parallel.mesh import make_mesh
from mmjax.plan import InputShapes

EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))
SHAPES = InputShapes(image_size=16, channels=1, frames=4, signal_samples=100, text_len=16,
                     vocab_size=50, num_labels=5)


def _sized(width, depth=2):
    return {"width": width, "depth": depth, "num_heads": 4, "mlp_dim": 4 * width}


def _config(model: ModelConfig, modalities=("image", "report"), **objectives) -> Config:
    return Config(name="tiny", data=DataConfig(modalities=modalities), model=model,
                  objectives=ObjectivesConfig(**objectives))


def _tiny_model(fusion="hybrid") -> ModelConfig:
    return ModelConfig(
        image=ViTConfig(patch_size=4, pool="map", **_sized(32, 1)),
        text=TextConfig(**_sized(32, 1)),
        video=VideoConfig(tubelet_frames=2, patch_size=8, attention="factorised",
                          **_sized(32, 1)),
        signal=SignalConfig(patch_size=25, pool="cls", **_sized(32, 1)),
        fusion=FusionConfig(kind=fusion, **_sized(32, 1)),
        decoder=DecoderConfig(**_sized(32, 1)),
        embed_dim=16,
    )


def _small_shapes(cfg: Config) -> InputShapes:
    """Sizes every encoder of `cfg` divides, small enough to trace pod models quickly."""
    m = cfg.model
    patch = math.lcm(m.image.patch_size, m.video.patch_size)
    return InputShapes(image_size=patch * max(1, math.ceil(32 / patch)), channels=1,
                       frames=2 * m.video.tubelet_frames, signal_samples=4 * m.signal.patch_size,
                       audio_samples=4000, audio_rate_hz=2000, text_len=cfg.data.max_text_len,
                       vocab_size=64, num_labels=5)


def _trainer_params(cfg: Config, shapes: InputShapes) -> dict:
    """The parameters training initialises, as shapes: the model definition the trainer's
    input builds, initialised as train/setup.py's build does, on a 1-device mesh."""
    prevalence = np.full(shapes.num_labels, 0.1, np.float32)
    definition = build.define(cfg, Vocab(shapes.vocab_size), shapes.num_labels, prevalence,
                              shapes.audio_rate_hz)
    mesh = make_mesh(config_lib.ParallelConfig(), jax.devices()[:1])
    batch = plan_lib.example_batch(shapes, cfg.data.modalities, batch_size=2)
    parameters = definition.parameters(batch, mesh)
    params, _ = jax.eval_shape(lambda b: definition.init(b, parameters, mesh), batch)
    return params


def _leaf_sizes(tree) -> int:
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_parameter_counts_equal_what_training_initialises(path):
    """Also for encoders the FLOPs cannot model (CNN, frames, audio): counting only
    needs the model definition."""
    cfg = config_lib.load(path)
    shapes = _small_shapes(cfg)

    counts = plan_lib.count_params(cfg, shapes)

    params = _trainer_params(cfg, shapes)
    assert counts["total"] == _leaf_sizes(params)
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]


def test_the_demo_counts_its_decoders():
    """demo_pretrain trains captions and MAE: the report decoder, the image MAE decoder
    and the memory projection exist and are counted (the old planner missed them)."""
    cfg = config_lib.load(REPO / "experiments" / "demo_pretrain.py", ["data.path="])
    shapes = plan_lib.input_shapes(cfg)

    modules = plan_lib.module_params(cfg, shapes)
    counts = plan_lib.count_params(cfg, shapes)

    decoders = ("report_decoder", "mae_decoders_image", "memory_image")
    assert all(modules[name] > 0 for name in decoders), modules
    assert counts["decoders"] == sum(modules[name] for name in decoders)
    assert counts["total"] == _leaf_sizes(_trainer_params(cfg, shapes))
    # Without caption and MAE neither decoder is created.
    cfg.objectives.caption = cfg.objectives.mae = 0.0
    assert "decoders" not in plan_lib.count_params(cfg, shapes)


def test_uncertainty_weighting_counts_its_log_variances():
    cfg = _config(_tiny_model(), contrastive=1.0, mlm=0.5, caption=0.5)
    fixed = plan_lib.count_params(cfg, SHAPES)
    cfg.objectives.weighting = "uncertainty"

    counts = plan_lib.count_params(cfg, SHAPES)

    assert counts["weighting"] == 3  # contrastive/image-report, mlm, caption
    assert counts["total"] == fixed["total"] + 3 == _leaf_sizes(_trainer_params(cfg, SHAPES))


def test_the_objectives_decide_the_encoders_and_heads():
    """Only what an enabled objective runs exists: a modality in no contrastive pair has
    no encoder until an objective fuses every modality."""
    model = _tiny_model()
    modalities = ("image", "video", "signal", "report")
    pairs = ("image-report", "video-report", "signal-report")
    one_pair = plan_lib.count_params(_config(model, modalities), SHAPES)
    contrastive = plan_lib.count_params(_config(model, modalities, contrastive_pairs=pairs),
                                        SHAPES)
    heads = {"mlm": 1.0, "matching": 1.0, "diagnosis": 1.0, "risk": 1.0}
    everything = plan_lib.count_params(_config(model, modalities, **heads), SHAPES)
    modules = plan_lib.module_params(_config(model, modalities, **heads), SHAPES)

    assert "encoders_video" not in one_pair and "encoders_signal" not in one_pair
    assert "fusion" not in contrastive and "heads" not in contrastive
    for m in modalities:
        assert everything[f"encoders_{m}"] == contrastive[f"encoders_{m}"]
    assert everything["fusion"] > 0
    assert everything["heads"] == sum(modules[h] for h in ("diagnosis", "risk", "matching",
                                                            "mlm"))


def test_a_plain_text_transformer_follows_6_n_d():
    """Training a dense transformer costs 6 FLOPs per non-embedding parameter per token
    plus attention's 12·depth·L·D per token, a relative L/(6·D); at L = 32, D = 128
    that is 4%, so the rule must hold within 10%."""
    width, length, vocab = 128, 32, 64
    cfg = _config(ModelConfig(text=TextConfig(**_sized(width, 4)), embed_dim=64))
    shapes = InputShapes(text_len=length, vocab_size=vocab)
    params = plan_lib.count_params(cfg, shapes)
    embeddings = vocab * width + length * width  # token and position tables: lookups
    n = params["encoders_report"] - embeddings

    flops = plan_lib.flops_per_example(cfg, shapes)["encoders_report"]

    assert flops.total == pytest.approx(6 * n * length, rel=0.10)
    # Without attention scores it is 6·N·D up to biases and norms (<1% of N here).
    assert flops.dense == pytest.approx(6 * n * length, rel=0.01)
    assert flops.attention / flops.dense == pytest.approx(length / (6 * width), rel=0.01)


XLA_MODEL = ModelConfig(
    image=ViTConfig(patch_size=8, pool="map", **_sized(128)),
    text=TextConfig(**_sized(128)),
    video=VideoConfig(patch_size=8, attention="factorised", **_sized(128)),
    signal=SignalConfig(pool="cls", **_sized(128)),
    fusion=FusionConfig(kind="early", **_sized(128)),
    decoder=DecoderConfig(**_sized(128, 1)),
    embed_dim=64)
XLA_CONFIGS = {
    "image-report generative": _config(XLA_MODEL, contrastive=1.0, caption=0.5, mae=0.5,
                                       mlm=0.5),
    "image-report generative, pooled memory too": _config(
        dataclasses.replace(XLA_MODEL, decoder=DecoderConfig(memory="both", **_sized(128, 1))),
        contrastive=1.0, caption=0.5),
    "video-signal diagnosis": _config(XLA_MODEL, ("video", "signal"),
                                      contrastive_pairs=("video-signal",), diagnosis=1.0),
}


@pytest.mark.parametrize("name", XLA_CONFIGS)
def test_analytic_forward_flops_agree_with_xla(name):
    """XLA's count of the compiled training forward also includes elementwise work
    (LayerNorm, softmax, GELU, biases, masking: O(L·D) and O(H·L²) against the matmuls'
    O(L·D²)), so at width 128 it reads 1-5% above the analytic matmul count and never
    below it; 10% is the tolerance. Both configs run decoders or fusion, MLM or heads."""
    cfg = XLA_CONFIGS[name]
    shapes = InputShapes(image_size=32, frames=8, text_len=64, vocab_size=256, num_labels=5)

    analytic = plan_lib.forward_flops(cfg, shapes)
    xla = plan_lib.compiled_flops(cfg, shapes)

    assert analytic["total"].total <= xla <= 1.10 * analytic["total"].total
    assert {"decoders", "fusion"} & set(analytic)


def test_flops_count_each_objectives_passes():
    """MLM runs the text encoder a second time; MAE its encoder over a quarter of the
    patches; caption and MAE add decoders; matching fuses three times per example."""
    cfg = _config(_tiny_model(), contrastive=1.0)
    shapes = dataclasses.replace(SHAPES, image_size=32)

    def flops(**objectives):
        return plan_lib.forward_flops(dataclasses.replace(
            cfg, objectives=ObjectivesConfig(**objectives)), shapes)

    base, mlm = flops(), flops(mlm=1.0)
    assert mlm["encoders_report"].total == 2 * base["encoders_report"].total
    mae = flops(mae=1.0)
    assert base["encoders_image"].total < mae["encoders_image"].total < (
        1.5 * base["encoders_image"].total)
    assert mae["decoders"].total > 0 and "decoders" not in base
    diagnosis, both = flops(diagnosis=1.0), flops(diagnosis=1.0, matching=1.0)
    fusion = diagnosis["fusion"].total
    assert fusion > 0 and both["fusion"].total == pytest.approx(4 * fusion)


def test_flops_scale_with_depth_and_length():
    cfg = _config(ModelConfig(image=ViTConfig(**_sized(64, 2)), text=TextConfig(**_sized(64, 2))))
    shapes = InputShapes(image_size=32, text_len=64)
    deeper_model = dataclasses.replace(
        cfg.model, image=ViTConfig(**_sized(64, 4)), text=TextConfig(**_sized(64, 4)))

    base = plan_lib.flops_per_example(cfg, shapes)
    deeper = plan_lib.flops_per_example(dataclasses.replace(cfg, model=deeper_model), shapes)
    longer = plan_lib.flops_per_example(cfg, dataclasses.replace(shapes, text_len=128))

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
        model = ModelConfig(video=dataclasses.replace(video, attention=kind))
        cfg = _config(model, ("video", "report"), contrastive_pairs=("video-report",))
        return plan_lib.forward_flops(cfg, shapes)["encoders_video"].attention

    assert attention("factorised") == 4 * width * depth * (times * space**2 + space * times**2)
    assert attention("joint") == 4 * width * depth * (times * space) ** 2


def test_format_plan_names_every_module_and_a_total():
    cfg = _config(_tiny_model("early"), contrastive=1.0, diagnosis=1.0, caption=0.5)
    result = plan_lib.plan(cfg, SHAPES)

    text = plan_lib.format_plan(result)

    for module in ("encoders_image", "encoders_report", "projections", "fusion", "heads",
                   "decoders"):
        assert module in result["params"] and module in result["flops"]
        assert any(line.startswith(module) for line in text.splitlines())
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "100.0%" in total and f"{result['flops']['total'].total / 1e9:.4f}" in total
    assert f"{result['params']['total']:,} parameters" in text and "caption 0.5" in text
    assert "MFU" in text


def test_encoders_the_flops_cannot_model_are_refused_by_name():
    cfg = config_lib.load(REPO / "experiments" / "synthmed_cnn.py")
    with pytest.raises(ConfigError, match="model.image_encoder"):
        plan_lib.plan(cfg, _small_shapes(cfg))


def test_input_shapes_come_from_the_manifest_and_the_tokenizer(tmp_path):
    fields = shards.field_specs({"image": (48, 48, 3), "video": (16, 48, 48, 3),
                                 "signal": (1000, 12), "audio": (10000,), "report": ()})
    manifest = shards.Manifest("toy", fields, ["a", "b", "c"], {},
                               {"signal_rate_hz": 100, "audio_rate_hz": 2000})
    (tmp_path / shards.MANIFEST).write_text(manifest.to_json())
    tokenizer = tokenizer_lib.train(["no acute findings", "mild cardiomegaly"], 64)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    cfg = Config(data=DataConfig(path=str(tmp_path), max_text_len=40, video_frames=8,
                                 signal_seconds=2.5, audio_seconds=2.0))

    shapes = plan_lib.input_shapes(cfg)

    assert shapes == InputShapes(image_size=48, channels=3, frames=8, signal_samples=250,
                                 audio_samples=4000, audio_rate_hz=2000, text_len=40,
                                 vocab_size=tokenizer.get_vocab_size(), num_labels=3)
    fallback = InputShapes(image_size=24)
    assert plan_lib.input_shapes(Config(), fallback) == dataclasses.replace(
        fallback, text_len=Config().data.max_text_len)


def test_a_data_path_without_a_dataset_is_refused_unless_shapes_are_given(tmp_path):
    cfg = Config(data=DataConfig(path=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="missing has no manifest.json"):
        plan_lib.input_shapes(cfg)
    assumed = plan_lib.input_shapes(cfg, plan_lib.shape_overrides(["image_size=224"]))
    assert assumed.image_size == 224 and assumed.text_len == cfg.data.max_text_len


def test_the_plan_command_refuses_a_missing_dataset_and_says_what_it_assumes(tmp_path,
                                                                              capsys):
    config = str(REPO / "experiments" / "smoke_cpu.py")
    missing = tmp_path / "missing"

    assert cli.main(["plan", "--config", config, "--set", f"data.path={missing}"]) == 2
    error = capsys.readouterr().err.strip()
    assert str(missing) in error and len(error.splitlines()) == 1

    assert cli.main(["plan", "--config", config, "--devices", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("assumed input shapes") and "image_size 64" in out
    assert "plan smoke_cpu" in out and "memory per device" in out


def test_base_presets_have_vit_b16_and_bert_base_sizes():
    """ViT-B/16 at 224 px: timm's vit_base_patch16_224 without its head has 85,798,656
    parameters, one position row more (its CLS position) than ours: 85,797,888.
    BERT-base's encoder without embeddings and pooler: 12 x 7,087,872 = 85,054,464."""
    from mmjax.config import sized

    cfg = _config(ModelConfig(image=sized(ViTConfig, "base", patch_size=16),
                              text=sized(TextConfig, "base", norm="post")))
    shapes = InputShapes(image_size=224, channels=3, text_len=16, vocab_size=8)
    counts = plan_lib.count_params(cfg, shapes)
    assert counts["encoders_image"] == 85_797_888
    embeddings = 8 * 768 + 16 * 768  # our tiny vocab and 16 positions
    assert counts["encoders_report"] - embeddings == 85_054_464


def test_weight_memory_per_device_matches_a_real_sharded_state(smoke_dataset):
    """The planner's per-device bytes of parameters and Adam moments on a 2x4 (data x fsdp)
    mesh equal what the trainer's state holds on each of 8 real devices, and the flags name
    what no rule splits; planned on 64 devices with fsdp 16, the weights shrink ~4-fold."""
    from conftest import tiny_config

    from mmjax.train.setup import build as build_run
    from mmjax.train.setup import open_input

    cfg = tiny_config(smoke_dataset)
    cfg.parallel.data, cfg.parallel.fsdp = 2, 4
    data = open_input(cfg)
    run = build_run(cfg, data.define_model(cfg), data.batches[0])
    device = jax.devices()[0]

    def on_device(tree) -> int:
        return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
                   for shard in leaf.addressable_shards if shard.device == device)

    shapes = plan_lib.input_shapes(cfg)
    memory = plan_lib.weight_memory(cfg, shapes, 8, min_unsharded_bytes=0)
    assert memory["params"] == on_device(run.state.params)
    counts = [x for x in jax.tree.leaves(run.state.opt_state) if x.dtype == np.int32]
    assert memory["optimizer"] == on_device(run.state.opt_state) - on_device(counts)
    # Whole on every device: the scalars and the biases of dimensions split over `tensor`.
    assert memory["unsharded"] and all(p.endswith("bias") or p.startswith("logit_")
                                       for p in memory["unsharded"]), memory["unsharded"]
    cfg.parallel.data, cfg.parallel.fsdp = 4, 16
    wide = plan_lib.weight_memory(cfg, shapes, 64)
    assert wide["params"] < memory["params"] / 3 and wide["mesh"]["fsdp"] == 16


def test_activation_memory_is_a_lower_bound_that_scales_like_xlas(smoke_dataset):
    """Against XLA's buffer assignment of the compiled train step on one CPU device: the
    planner's activations (encoder blocks and contrastive logits; heads left out) stay
    under XLA's temporaries but within 2x of them, and grow with the batch as they do."""
    from conftest import tiny_config

    from mmjax.train.setup import build as build_run
    from mmjax.train.setup import open_input

    cfg = tiny_config(smoke_dataset)
    shapes, measured = plan_lib.input_shapes(cfg), {}
    for batch in (32, 64):
        cfg.train.batch_size = batch
        data = open_input(cfg)
        run = build_run(cfg, data.define_model(cfg), data.batches[0], jax.devices()[:1])
        compiled, _ = run.compile(run.to_device(data.batches[0]))
        measured[batch] = (compiled.memory_analysis().temp_size_in_bytes,
                           plan_lib.activation_memory(cfg, shapes, 1)["total"])
    for xla, planned in measured.values():
        assert xla / 2 < planned < xla, (xla, planned)
    xla_growth = measured[64][0] / measured[32][0]
    assert abs(measured[64][1] / measured[32][1] - xla_growth) < 0.15 * xla_growth
