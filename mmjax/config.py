"""Experiment configuration: typed, nested dataclasses that reject unknown keys.

Dataclasses rather than ml_collections because the field annotations give every
`--set a.b=c` override its type for free, a typo fails at construction instead of
silently creating a new field, and editors complete and type-check configs.
Experiment files in `experiments/` are plain Python exposing `get_config() -> Config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import keyword
import types
import typing
from pathlib import Path
from typing import Any

from mmjax import storage
from mmjax.errors import ConfigError


@dataclasses.dataclass
class DataConfig:
    """Which dataset to read and how examples are shaped for the model."""

    path: str = ""  # dataset folder from `mmjax data synthmed` or `mmjax data ingest`
    train_split: str = "train"
    train_fraction: float = 1.0  # train on this leading share of the split (label efficiency)
    eval_split: str = "eval"
    modalities: tuple[str, ...] = ("image", "report")
    max_text_len: int = 96
    tokenizer: str = ""  # '' = the dataset's tokenizer.json; or a tokenizer.json or vocab.txt
    augment: bool = True
    video_frames: int = 0  # 0 = every stored frame; fewer = a temporal crop
    signal_seconds: float = 0.0  # 0 = the whole stored signal; less = a crop
    audio_seconds: float = 0.0  # 0 = the whole stored recording; less = a crop
    # Signal cleaning (mmjax/data/filters.py), on the whole stored signal before the crop.
    signal_bandpass_hz: tuple[float, ...] = ()  # () = off; (low, high), e.g. (0.5, 40.0)
    signal_notch_hz: tuple[float, ...] = ()  # mains, e.g. (50.0, 60.0): harmonics or alias too
    signal_baseline: str = ""  # '' = off | median (two-stage 200 ms / 600 ms median filter)
    signal_standardize: bool = False  # zero mean, unit variance per recorded lead
    workers: int = 0  # input worker processes; 0 = threads in the training process


# Transformer sizes; base is ViT-B/16's and BERT-base's.
SIZES = {
    "tiny": {"width": 192, "depth": 12, "num_heads": 3, "mlp_dim": 768},
    "small": {"width": 384, "depth": 12, "num_heads": 6, "mlp_dim": 1536},
    "base": {"width": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072},
    "large": {"width": 1024, "depth": 24, "num_heads": 16, "mlp_dim": 4096},
}


def sized(cls, size: str, **fields):
    """An encoder config of a preset size, e.g. sized(ViTConfig, "base", patch_size=16)."""
    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}'; choose from {', '.join(SIZES)}")
    return cls(**{**SIZES[size], **fields})


@dataclasses.dataclass
class ViTConfig:
    patch_size: int = 8
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    pool: str = "cls"  # cls | mean | map (attention pooling)
    positions: str = "learned"  # learned | sincos


@dataclasses.dataclass
class TextConfig:
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    pool: str = "mean"  # cls | mean
    causal: bool = False
    # BERT compatibility (see mmjax/nn/pretrained.py): post-norm blocks, exact GELU,
    # a LayerNorm after the embeddings, token types and a 512-row position table.
    norm: str = "pre"  # pre | post
    layer_norm_eps: float = 1e-6
    exact_gelu: bool = False
    embed_norm: bool = False
    type_vocab_size: int = 0
    max_positions: int = 0  # 0 = data.max_text_len


@dataclasses.dataclass
class VideoConfig:
    tubelet_frames: int = 2
    patch_size: int = 8
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    attention: str = "joint"  # joint (space-time) | factorised (spatial, then temporal)
    pool: str = "mean"  # mean | cls; frame encoders also 'last' (the last real frame's state)
    # encoder=frames: each frame through an image encoder (shared weights across frames),
    # then `temporal` over the frame embeddings at `width`, `depth` layers; padded frames
    # (data with variable frame counts) are masked out.
    encoder: str = "tubelet"  # tubelet | frames
    frame_encoder: str = "vit"  # vit (model.image sizes) | resnet | vgg (model.cnn sizes)
    temporal: str = "transformer"  # transformer | gru | lstm


@dataclasses.dataclass
class SignalConfig:
    patch_size: int = 25  # samples per patch, e.g. 0.25 s at 100 Hz
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    pool: str = "mean"


@dataclasses.dataclass
class CNNConfig:
    """ResNet and VGG image encoders (model.image_encoder, video.frame_encoder). Tokens are
    the final feature map's positions, so early and hybrid fusion can use them."""

    # resnet: residual blocks per stage (ResNet-18: 2,2,2,2; ResNet-50: 3,4,6,3 + bottleneck);
    # vgg: 3x3 convolutions per stage (VGG-11: 1,1,2,2,2; VGG-16: 2,2,3,3,3). Each stage
    # after the first halves the feature map and doubles the channels.
    stages: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 32  # channels of the first stage (64 in the ImageNet models)
    bottleneck: bool = False  # resnet: 1x1-3x3-1x1 blocks with 4x wider outputs
    norm: str = "group"  # group | batch (statistics over the global batch, any strategy)
    norm_groups: int = 32  # GroupNorm groups (fewer when a layer has fewer channels)
    batch_norm_momentum: float = 0.9
    stem: str = "small"  # small: 3x3 stride-1 conv (<= 64 px) | imagenet: 7x7/2 conv + max pool
    pool: str = "mean"  # mean | map (attention pooling) over the final feature map


@dataclasses.dataclass
class AudioConfig:
    """Heart sounds and other audio: a log-mel spectrogram cut into patches through a
    transformer (AST, Gong et al. 2021), or the raw waveform through 1-D patches."""

    encoder: str = "spectrogram"  # spectrogram | waveform
    mel_bins: int = 32
    window_ms: float = 64.0  # 25 ms suits speech at 16 kHz; heart sounds need finer bands
    hop_ms: float = 16.0
    min_hz: float = 20.0
    max_hz: float = 0.0  # 0 = Nyquist
    patch_size: int = 8  # spectrogram: square (frames x bands) patches
    waveform_patch: int = 40  # waveform: samples per patch
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    pool: str = "mean"  # mean | cls | map


@dataclasses.dataclass
class FusionConfig:
    kind: str = "late"  # late | early | hybrid
    width: int = 64  # tokens of every modality are projected to this width
    depth: int = 2  # early: joint layers; hybrid: cross-attention layers
    num_heads: int = 4
    mlp_dim: int = 256


@dataclasses.dataclass
class DecoderConfig:
    """The MAE decoders (at `width`) and the report decoder (at the text width)."""

    width: int = 64
    depth: int = 1
    num_heads: int = 4
    mlp_dim: int = 256


@dataclasses.dataclass
class ModelConfig:
    image_encoder: str = "vit"  # vit (model.image) | resnet | vgg (model.cnn)
    image: ViTConfig = dataclasses.field(default_factory=ViTConfig)
    cnn: CNNConfig = dataclasses.field(default_factory=CNNConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    video: VideoConfig = dataclasses.field(default_factory=VideoConfig)
    signal: SignalConfig = dataclasses.field(default_factory=SignalConfig)
    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    embed_dim: int = 64
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # CLIP clips exp(logit_scale) here
    init_bias: float = -10.0  # sigmoid loss bias (SigLIP)
    dtype: str = "float32"  # compute dtype; bfloat16 on accelerators
    param_dtype: str = "float32"
    remat: bool = False  # recompute block activations in the backward pass


@dataclasses.dataclass
class OptimConfig:
    learning_rate: float = 1e-3
    end_learning_rate_factor: float = 0.01
    warmup_steps: int = 20
    weight_decay: float = 0.05
    b1: float = 0.9
    b2: float = 0.98
    grad_clip_norm: float = 1.0
    freeze: str = ""  # regex over parameter paths ('encoders_image/...') left untrained (LiT)
    layer_decay: float = 1.0  # < 1: block i of n trains at lr * layer_decay**(n - i)


@dataclasses.dataclass
class ObjectivesConfig:
    """The training losses and their weights; a weight of 0 turns an objective off."""

    contrastive: float = 1.0
    contrastive_loss: str = "softmax"  # softmax (CLIP InfoNCE) | sigmoid (SigLIP)
    contrastive_pairs: tuple[str, ...] = ("image-report",)  # any two modalities, 'a-b'
    mlm: float = 0.0  # masked language modelling of the report
    mlm_probability: float = 0.15
    mae: float = 0.0  # masked autoencoding of each of mae_modalities
    mae_modalities: tuple[str, ...] = ("image",)
    mae_mask_ratio: float = 0.75
    matching: float = 0.0  # image-text matching on the fused vector, mined hard negatives
    matching_pair: str = "image-report"
    caption: float = 0.0  # teacher-forced report generation
    diagnosis: float = 0.0  # multi-label findings from the fused vector
    diagnosis_loss: str = "bce"  # bce | focal
    focal_gamma: float = 2.0
    class_weights: bool = False  # positives weighted by (1 - p) / p from train prevalence
    risk: float = 0.0  # the binary risk outcome from the fused vector
    weighting: str = "fixed"  # fixed | uncertainty (learned, Kendall et al. 2018)


@dataclasses.dataclass
class InitConfig:
    """Where parameters start; the rest are freshly initialised."""

    from_: str = ""  # `--set init.from=W`: a workdir whose latest params are loaded by name
    text_from: str = ""  # a BERT-style checkpoint (safetensors) for the report encoder


@dataclasses.dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 64  # global, across every device and host
    accumulation_steps: int = 1  # micro-batches per step; exact for contrastive losses too
    num_steps: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    max_checkpoints: int = 2  # the newest N are kept ...
    keep_checkpoint_every: int = 0  # ... and every K-th step's forever (0: none)
    tensorboard: bool = True  # also write workdir/tensorboard event files
    peak_tflops: float = 0.0  # per device, for MFU; 0 = from the device kind (CPU: unknown)
    # A step whose loss or gradients are NaN/Inf is skipped (counted);
    # this many in a row stop the run with an error.
    max_nonfinite_steps: int = 20


@dataclasses.dataclass
class EvalConfig:
    """Held-out evaluation: which evaluators run (mmjax/eval/registry.py), how often, and
    their knobs. Every evaluator sees each example of `data.eval_split` exactly once."""

    evaluators: tuple[str, ...] = ("retrieval",)
    every: int = 0  # also run them every N training steps (0: only after the last step)
    batch_size: int = 128
    recall_at: tuple[int, ...] = (1, 5, 10)
    prompts: str = ""  # JSON {finding: {"positive": [...], "negative": [...]}}; "" = built in
    normal_prompts: tuple[str, ...] = ()  # a normal study, added to built-in negatives
    findings: tuple[str, ...] = ()  # mean AUCs are over these labels ((): every label)
    probe_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # of the training labels
    probe_examples: int = 4096  # training examples embedded for the probe (0: all)
    probe_l2: float = 1e-3
    generate_examples: int = 128  # eval reports generated (0: all); decoding is slow on CPU
    generate_max_len: int = 0  # tokens (0: data.max_text_len)
    beam_size: int = 4
    length_penalty: float = 0.0  # beams ranked by log-likelihood / length ** this
    examples: int = 8  # retrieval, reconstruction and report examples kept for the report


@dataclasses.dataclass
class ParallelConfig:
    """How devices are used. mesh: jit over a (data, fsdp, tensor) mesh, parameters sharded
    by the logical-axis rules; pmap: replicated parameters, gradients averaged."""

    strategy: str = "mesh"  # mesh | pmap
    data: int = -1  # devices on the data axis; -1 takes the devices the others leave
    fsdp: int = 1  # parameters and batch split over this axis (ZeRO-3 style)
    tensor: int = 1  # matmul dimensions (mlp, heads, vocab) split over this axis


@dataclasses.dataclass
class Config:
    name: str = "unnamed"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objectives: ObjectivesConfig = dataclasses.field(default_factory=ObjectivesConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)


def _key(attribute: str) -> str:
    """The config key of a field: `from_` is spelt `init.from` (a Python keyword)."""
    stripped = attribute.removesuffix("_")
    return stripped if keyword.iskeyword(stripped) else attribute


def _attribute(key: str) -> str:
    return f"{key}_" if keyword.iskeyword(key) else key


def _field_types(cls: type) -> dict[str, Any]:
    """Field types by config key."""
    return {_key(name): annotation for name, annotation in typing.get_type_hints(cls).items()}


def leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted paths to non-dataclass fields, e.g. 'train.batch_size'."""
    keys = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        path = f"{prefix}{_key(field.name)}"
        if dataclasses.is_dataclass(value):
            keys.extend(leaf_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def _unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parses the string of a --set override into the field's annotated type."""
    origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if annotation in (int, float, str):
            return annotation(text)
        if origin is tuple:
            (item_type, _ellipsis) = typing.get_args(annotation)
            items = [t for t in text.strip("()[] ").split(",") if t.strip()]
            return tuple(_parse_value(t.strip(), item_type, key) for t in items)
    except ValueError:
        raise ConfigError(
            f"config key '{key}' expects {_type_name(annotation)}, got '{text}'"
        ) from None
    raise ConfigError(f"config key '{key}' has type {annotation!r} that --set cannot parse")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks a Python value (from JSON or code) against the field type."""
    if typing.get_origin(annotation) is tuple and isinstance(value, list | tuple):
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    is_bool_as_int = annotation is int and isinstance(value, bool)
    if isinstance(annotation, type) and isinstance(value, annotation) and not is_bool_as_int:
        return value
    raise ConfigError(f"config key '{key}' expects {_type_name(annotation)}, got {value!r}")


def override(cfg: Config, assignment: str) -> None:
    """Applies one 'a.b=c' override in place, parsing c to the field's type."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    node = _parent_of(cfg, key)
    name = key.rsplit(".", 1)[-1]
    annotation = _field_types(type(node))[name]
    setattr(node, _attribute(name), _parse_value(text, annotation, key))


def _parent_of(cfg: Any, key: str) -> Any:
    """Returns the dataclass holding the leaf `key`, or raises naming the bad key."""
    valid = leaf_keys(cfg)
    if key not in valid:
        raise _unknown_key_error(key, valid)
    return _get(cfg, key.rpartition(".")[0]) if "." in key else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return {
        _key(field.name): (to_dict(value) if dataclasses.is_dataclass(value) else value)
        for field in dataclasses.fields(cfg)
        for value in [getattr(cfg, field.name)]
    }


def from_dict(data: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Builds a config from nested dicts (e.g. a workdir's config.json), strictly."""
    types_ = _field_types(cls)
    valid = [f"{prefix}{k}" for k in types_]
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in types_:
            raise _unknown_key_error(key, valid)
        annotation = types_[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' expects a section, got {value!r}")
            kwargs[_attribute(name)] = from_dict(value, annotation, key + ".")
        else:
            kwargs[_attribute(name)] = _coerce(value, annotation, key)
    return cls(**kwargs)


def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Runs an experiment file's get_config() and applies --set overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"mmjax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not isinstance(get_config, types.FunctionType):
        raise ConfigError(f"config file {path} does not define get_config()")
    cfg = get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not Config")
    for assignment in overrides:
        override(cfg, assignment)
    return cfg


def save(cfg: Config, path: str | Path) -> None:
    storage.path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def read(path: str | Path) -> Config:
    path = storage.path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    return from_dict(data)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs of the same class."""
    return [
        key
        for key in leaf_keys(a, prefix)
        if _get(a, key[len(prefix):]) != _get(b, key[len(prefix):])
    ]


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, _attribute(part))
    return cfg
