"""`validate(cfg)`: every value's type, then the rules between fields, checked when a
config is loaded, read or overridden, so a run that cannot work stops before it starts.
Each ConfigError names the key(s). Rules that need the dataset (its labels, fields and
sampling rates) or the devices (mesh sizes against the device count) stay where those are
known."""

from __future__ import annotations

import dataclasses
import math
import re

from mmjax.config.base import get
from mmjax.config.evaluation import KINDS, parse_name
from mmjax.config.sections import Config, ModelConfig
from mmjax.config.values import check_types
from mmjax.errors import ConfigError

# Encoders that cut their input into patches a masked autoencoder can hide.
PATCH_ENCODERS = {"image": ("vit",), "video": ("tubelet",), "signal": ("transformer",)}
QUERY_MODALITIES = ("image", "video", "signal", "audio")  # retrieved against the report
FUSED_OBJECTIVES = ("matching", "diagnosis", "risk")  # they read the fused vector


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Where a numeric field's value may lie; NaN lies nowhere."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False  # the bound itself is excluded
    open_high: bool = False

    def __contains__(self, x) -> bool:
        above = self.low < x if self.open_low else self.low <= x
        below = x < self.high if self.open_high else x <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return (f"in {'(' if self.open_low else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.open_high else ']'}")


def at_least(low: float) -> Bounds:
    return Bounds(low)


POSITIVE = Bounds(0, open_low=True)
_TRANSFORMERS = ("image", "text", "video", "signal", "audio", "fusion", "decoder")
# The range of every bounded numeric field, checked at load (other floats need only be
# finite, which values.coerce checks); eval sections' `every` and `examples` are added.
RANGES = {
    "train.batch_size": at_least(1), "train.accumulation_steps": at_least(1),
    "train.num_steps": at_least(1), "train.log_every": at_least(1),
    "train.checkpoint_every": at_least(1), "train.max_checkpoints": at_least(1),
    "train.keep_checkpoint_every": at_least(0), "train.max_nonfinite_steps": at_least(1),
    "train.seed": at_least(0), "train.peak_tflops": at_least(0),
    "data.workers": at_least(0), "data.image_size": at_least(0), "data.video_frames": at_least(0),
    "data.max_text_len": at_least(2),  # [CLS] and [SEP]
    "data.train_fraction": Bounds(0, 1, open_low=True),
    "data.signal_seconds": at_least(0), "data.audio_seconds": at_least(0),
    "optim.learning_rate": at_least(0), "optim.end_learning_rate_factor": at_least(0),
    "optim.warmup_steps": at_least(0), "optim.weight_decay": at_least(0),
    "optim.b1": Bounds(0, 1, open_high=True), "optim.b2": Bounds(0, 1, open_high=True),
    "optim.grad_clip_norm": POSITIVE, "optim.layer_decay": Bounds(0, 1, open_low=True),
    "model.embed_dim": at_least(1), "model.init_temperature": at_least(0),
    "model.min_logit_scale": POSITIVE, "model.max_logit_scale": POSITIVE,
    "objectives.focal_gamma": at_least(0), "eval.bootstrap_samples": at_least(0),
    **{f"model.{name}.{size}": at_least(1) for name in _TRANSFORMERS
       for size in ("width", "num_heads", "mlp_dim")},
    **{f"model.{name}.depth": at_least(0) for name in _TRANSFORMERS},
    **{f"model.{name}.patch_size": at_least(1) for name in ("image", "video", "signal", "audio")},
    "model.video.tubelet_frames": at_least(1), "model.audio.waveform_patch": at_least(1),
    "model.audio.mel_bins": at_least(1), "model.audio.window_ms": POSITIVE,
    "model.audio.hop_ms": POSITIVE, "model.audio.min_hz": at_least(0),
    "model.audio.max_hz": at_least(0), "model.text.layer_norm_eps": POSITIVE,
    "model.image.layer_norm_eps": POSITIVE,
    "model.text.type_vocab_size": at_least(0), "model.text.projection_hidden": at_least(0),
    "model.text.max_positions": at_least(0),
    **{f"model.{cnn}.{key}": bounds for cnn in ("cnn", "signal_cnn") for key, bounds in (
        ("width", at_least(1)), ("norm_groups", at_least(1)),
        ("batch_norm_momentum", Bounds(0, 1)))},
    "model.signal_cnn.kernel_size": at_least(1),
    "model.fusion.bottleneck_tokens": at_least(1),
    "eval.batch_size": at_least(1), "eval.generation.beam_size": at_least(1),
    "eval.generation.limit": at_least(0), "eval.generation.max_len": at_least(0),
    "eval.probe.train_examples": at_least(0), "eval.probe.l2": at_least(0),
    **{f"eval.{kind}.every": at_least(0) for kind in KINDS},
    **{f"eval.{kind}.examples": at_least(0)
       for kind in ("retrieval", "generation", "reconstruction")},
}


# Each contrastive loss's initial temperature: CLIP's 0.07, SigLIP's 1/10 (Zhai et al. 2023).
LOSS_TEMPERATURES = {"softmax": 0.07, "sigmoid": 0.1}


def initial_temperature(cfg: ModelConfig, loss: str = "softmax") -> float:
    """model.init_temperature, or where it is 0 the contrastive `loss`'s own."""
    return cfg.init_temperature or LOSS_TEMPERATURES[loss]


def encoder_kind(cfg: ModelConfig, modality: str) -> str:
    """The encoder a modality runs where the config chooses one (image, video, signal);
    '' for the others."""
    return {"image": cfg.image_encoder, "video": cfg.video.encoder,
            "signal": cfg.signal.encoder}.get(modality, "")


def has_patches(cfg: ModelConfig, modality: str) -> bool:
    """Whether MAE can hide parts of this modality's input: its encoder takes patches."""
    return encoder_kind(cfg, modality) in PATCH_ENCODERS.get(modality, ())


def uses_batch_norm(cfg: ModelConfig, modalities) -> bool:
    """Whether a CNN with BatchNorm encodes images, video frames or signals of these
    modalities."""
    kinds = [cfg.image_encoder] if "image" in modalities else []
    if "video" in modalities and cfg.video.encoder == "frames":
        kinds.append(cfg.video.frame_encoder)
    signal_cnn = "signal" in modalities and encoder_kind(cfg, "signal") == "xresnet1d"
    return (cfg.cnn.norm == "batch" and any(k in ("resnet", "vgg") for k in kinds)
            or signal_cnn and cfg.signal_cnn.norm == "batch")


def video_pools(cfg: ModelConfig) -> tuple[str, ...]:
    """The poolings model.video.pool may take with this video encoder."""
    video = cfg.video
    if video.encoder == "frames":
        return ("last", "mean", "map") + (("cls",) if video.temporal == "transformer" else ())
    return ("cls", "mean", "map") if video.attention == "joint" else ("cls", "mean")


def validate(cfg: Config) -> Config:
    """Checks `cfg` (and normalises its values: lists to tuples, ints to floats where a
    float is expected); returns it."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a Config, got {type(cfg).__name__}")
    check_types(cfg)
    for rule in (_ranges, _train, _data, _objectives, _model, _optim, _evaluation):
        rule(cfg)
    return cfg


def _ranges(cfg: Config) -> None:
    for key, bounds in RANGES.items():
        if (value := get(cfg, key)) not in bounds:
            raise ConfigError(f"{key} must be {bounds}, got {value}")


def _train(cfg: Config) -> None:
    train = cfg.train
    if train.batch_size % train.accumulation_steps:
        raise ConfigError(f"train.batch_size={train.batch_size} is not divisible by "
                          f"train.accumulation_steps={train.accumulation_steps}")
    if cfg.parallel.strategy == "pmap" and train.accumulation_steps > 1:
        raise ConfigError("train.accumulation_steps > 1 needs parallel.strategy=mesh")
    sizes = {f"parallel.{axis}": getattr(cfg.parallel, axis)
             for axis in ("data", "fsdp", "tensor")}
    bad = [f"{key}={size}" for key, size in sizes.items() if size < 1 and size != -1]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: mesh sizes are positive device counts or -1")
    free = [f"{key}=-1" for key, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"only one of {', '.join(sizes)} may be -1, got {', '.join(free)}")


def _data(cfg: Config) -> None:
    data = cfg.data
    if not data.modalities or len(set(data.modalities)) < len(data.modalities):
        raise ConfigError(f"data.modalities must name distinct modalities, got "
                          f"{data.modalities}")
    band = data.signal_bandpass_hz
    if band and not (len(band) == 2 and 0 < band[0] < band[1]):
        raise ConfigError(f"data.signal_bandpass_hz must be () or (low, high) with "
                          f"0 < low < high, got {band}")
    mean, std = data.image_mean, data.image_std
    if len(mean) != len(std) or any(s <= 0 for s in std) or (
            mean and len(mean) != (data.image_channels or len(mean))):
        raise ConfigError(f"data.image_mean {mean} and data.image_std {std} must be both () "
                          "or one value per channel, std > 0")
    if data.image_channels not in (0, 1, 3):
        raise ConfigError(f"data.image_channels must be 0 (as stored), 1 or 3, got "
                          f"{data.image_channels}")
    if any(f <= 0 for f in data.signal_notch_hz):
        raise ConfigError(f"data.signal_notch_hz must be positive frequencies, got "
                          f"{data.signal_notch_hz}")


def _pair(text: str, key: str) -> tuple[str, str]:
    parts = tuple(text.split("-"))
    if len(parts) != 2 or parts[0] == parts[1]:
        raise ConfigError(f"{key}: '{text}' is not a pair of two modalities like "
                          "'image-report'")
    return parts


def _needs(cfg: Config, key: str, modalities, what: str = "") -> None:
    missing = [m for m in modalities if m not in cfg.data.modalities]
    if missing:
        raise ConfigError(f"{key}{what} needs {', '.join(missing)} in data.modalities "
                          f"({', '.join(cfg.data.modalities)})")


def _objectives(cfg: Config) -> None:
    o = cfg.objectives
    weights = [f.name for f in o.__dataclass_fields__.values() if f.metadata.get("weight")]
    if negative := [f"objectives.{w}={getattr(o, w)}" for w in weights if getattr(o, w) < 0]:
        raise ConfigError(f"{', '.join(negative)}: objective weights must be >= 0")
    if not any(getattr(o, w) for w in weights):
        raise ConfigError(f"every objectives weight ({', '.join(weights)}) is 0: nothing to "
                          "train")
    if o.contrastive:
        if not o.contrastive_pairs:
            raise ConfigError("objectives.contrastive is on but objectives.contrastive_pairs "
                              "is empty")
        if len(set(o.contrastive_pairs)) < len(o.contrastive_pairs):
            raise ConfigError(f"objectives.contrastive_pairs repeats a pair: "
                              f"{o.contrastive_pairs}")
        for text in o.contrastive_pairs:
            _needs(cfg, "objectives.contrastive_pairs",
                   _pair(text, "objectives.contrastive_pairs"), f" '{text}'")
    for name in ("mlm", "caption"):
        if getattr(o, name):
            _needs(cfg, f"objectives.{name}", ("report",))
    if o.mlm and not 0 < o.mlm_probability < 1:
        raise ConfigError(f"objectives.mlm_probability must be in (0, 1), got "
                          f"{o.mlm_probability}")
    if o.mae:
        _mae(cfg)
    if o.matching:
        _needs(cfg, "objectives.matching_pair",
               _pair(o.matching_pair, "objectives.matching_pair"))
        if cfg.model.fusion.kind in ("late", "decision"):
            raise ConfigError(
                f"objectives.matching needs model.fusion.kind=early, hybrid or bottleneck: "
                f"{cfg.model.fusion.kind} fusion combines each modality on its own and cannot "
                "express whether two of them agree")
    fused = [f"objectives.{name}" for name in FUSED_OBJECTIVES if getattr(o, name)]
    if fused and cfg.model.fusion.kind == "hybrid" and len(cfg.data.modalities) < 2:
        raise ConfigError(f"model.fusion.kind=hybrid (for {', '.join(fused)}) needs two or "
                          f"more data.modalities to attend across, got "
                          f"{', '.join(cfg.data.modalities)}")


def _mae(cfg: Config) -> None:
    o = cfg.objectives
    if not o.mae_modalities or len(set(o.mae_modalities)) < len(o.mae_modalities):
        raise ConfigError(f"objectives.mae_modalities must name distinct modalities, got "
                          f"{o.mae_modalities}")
    _needs(cfg, "objectives.mae_modalities", o.mae_modalities)
    for modality in o.mae_modalities:
        if not has_patches(cfg.model, modality):
            raise ConfigError(
                f"objectives.mae_modalities: '{modality}' has no patch encoder to mask "
                "(MAE needs model.image_encoder=vit, model.video.encoder=tubelet or "
                "model.signal.encoder=transformer)")
    if "video" in o.mae_modalities and cfg.model.video.attention != "joint":
        raise ConfigError("objectives.mae_modalities: masked video needs "
                          "model.video.attention=joint (a factorised grid cannot drop tubes)")
    if not 0 < o.mae_mask_ratio < 1:
        raise ConfigError(f"objectives.mae_mask_ratio must be in (0, 1), got "
                          f"{o.mae_mask_ratio}")


def _model(cfg: Config) -> None:
    model, modalities = cfg.model, cfg.data.modalities
    if cfg.parallel.strategy == "mesh" and cfg.train.accumulation_steps > 1 and \
            uses_batch_norm(model, modalities):
        raise ConfigError(
            "train.accumulation_steps > 1 with BatchNorm (model.cnn.norm=batch): statistics "
            "over micro-batches would differ from the whole batch's; use model.cnn.norm=group "
            "(model.signal_cnn.norm=group for the signal CNN)")
    if "video" in modalities and model.video.pool not in (pools := video_pools(model)):
        raise ConfigError(
            f"model.video.pool={model.video.pool} does not go with model.video.encoder="
            f"{model.video.encoder} (attention {model.video.attention}, temporal "
            f"{model.video.temporal}); choose from {', '.join(pools)}")
    if model.min_logit_scale >= model.max_logit_scale:
        raise ConfigError(f"model.min_logit_scale ({model.min_logit_scale:g}) must be below "
                          f"model.max_logit_scale ({model.max_logit_scale:g})")
    scale = 1 / initial_temperature(model, cfg.objectives.contrastive_loss)
    if not model.min_logit_scale <= scale <= model.max_logit_scale:
        raise ConfigError(f"model.init_temperature: its logit scale {scale:g} lies outside "
                          f"[model.min_logit_scale, model.max_logit_scale] = "
                          f"[{model.min_logit_scale:g}, {model.max_logit_scale:g}]")
    if "signal" in modalities and model.signal.encoder == "xresnet1d":
        _signal_cnn(model)
    if model.image.cls_position and model.image.pool != "cls":
        raise ConfigError("model.image.cls_position needs model.image.pool=cls (it gives the "
                          f"CLS token a position), got pool={model.image.pool}")


def _optim(cfg: Config) -> None:
    try:
        re.compile(cfg.optim.freeze)
    except re.error as e:
        raise ConfigError(f"optim.freeze '{cfg.optim.freeze}' is not a regular expression: "
                          f"{e}") from None


def check_evaluators(cfg: Config, names, key: str = "eval.evaluators") -> None:
    """Each name is `kind` or `kind@split`, of a known kind, once, and the config trains
    what its evaluator reads."""
    kinds = [parse_name(name) for name in names]
    if unknown := [name for name, (kind, _) in zip(names, kinds, strict=True)
                   if kind not in KINDS]:
        raise ConfigError(f"{key}: unknown {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(KINDS))}")
    if bad := [name for name in names if name.endswith("@")]:
        raise ConfigError(f"{key}: '{bad[0]}' names no split after '@'")
    if repeated := sorted({name for name in names if list(names).count(name) > 1}):
        raise ConfigError(f"{key}: {', '.join(repeated)} appears twice; give the runs "
                          "different splits (kind@split)")
    for kind in dict.fromkeys(kind for kind, _ in kinds):
        if problem := _evaluator_needs(cfg, kind):
            raise ConfigError(f"{key}: evaluator '{kind}' needs {problem}")


def _evaluator_needs(cfg: Config, kind: str) -> str | None:
    have, o = set(cfg.data.modalities), cfg.objectives
    query = "data.modalities to include " + " or ".join(QUERY_MODALITIES)
    if kind in ("retrieval", "zeroshot") and "report" not in have:
        return "data.modalities to include report"
    if kind in ("retrieval", "zeroshot", "probe") and not have & set(QUERY_MODALITIES):
        return query
    return {"diagnosis": None if o.diagnosis else
            "a trained diagnosis head (objectives.diagnosis > 0)",
            "generation": None if o.caption else
            "a trained report decoder (objectives.caption > 0)",
            "reconstruction": None if o.mae else "MAE decoders (objectives.mae > 0)",
            }.get(kind)


def _evaluation(cfg: Config) -> None:
    check_evaluators(cfg, cfg.eval.evaluators)
    e = cfg.eval
    if not e.retrieval.recall_at or min(e.retrieval.recall_at) < 1:
        raise ConfigError(f"eval.retrieval.recall_at must be ranks >= 1, got "
                          f"{e.retrieval.recall_at}")
    if not e.probe.fractions or not all(0 < f <= 1 for f in e.probe.fractions):
        raise ConfigError(f"eval.probe.fractions must be in (0, 1], got {e.probe.fractions}")


def _signal_cnn(model: ModelConfig) -> None:
    cnn = model.signal_cnn
    if not cnn.stages or min(cnn.stages) < 1:
        raise ConfigError(f"model.signal_cnn.stages must be one or more positive block "
                          f"counts, got {cnn.stages}")
    if cnn.kernel_size % 2 == 0:
        raise ConfigError(f"model.signal_cnn.kernel_size must be odd (a centred 'same' "
                          f"convolution), got {cnn.kernel_size}")
