"""The config sections. A string field with a fixed set of values is a Literal: `--set`,
config.json and `load()` refuse anything else, naming the key and the choices."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mmjax.config.base import Section, section
from mmjax.config.evaluation import EvalConfig
from mmjax.errors import ConfigError

Modality = Literal["image", "video", "signal", "audio", "report"]
ImageEncoder = Literal["vit", "resnet", "vgg"]
Dtype = Literal["float32", "bfloat16", "float16"]
# The MLP nonlinearity (mmjax/nn/transformer.py ACTIVATIONS): gelu_tanh (ViT, mmjax's own
# models), gelu (exact, BERT), quick_gelu (OpenAI CLIP).
Activation = Literal["gelu_tanh", "gelu", "quick_gelu"]
Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]  # PIL's


def weight(default: float) -> float:
    """An objective's weight field (0 turns it off); validation needs one of them on."""
    return dataclasses.field(default=default, metadata={"weight": True})


@dataclasses.dataclass
class DataConfig(Section):
    """Which dataset to read and how examples are shaped for the model."""

    path: str = ""  # dataset folder from `mmjax data synthmed` or `mmjax data ingest`
    train_split: str = "train"
    train_fraction: float = 1.0  # train on this leading share of the split (label efficiency)
    eval_split: str = "eval"
    modalities: tuple[Modality, ...] = ("image", "report")
    max_text_len: int = 96
    tokenizer: str = ""  # '' = the dataset's tokenizer.json; or a tokenizer.json or vocab.txt
    augment: bool = True
    # What a pretrained image tower was trained on (set by `mmjax import`): images resized
    # (with image_interpolation) to image_size and grey replicated to image_channels (0: as
    # stored), then (x - image_mean) / image_std per channel; () standardises each image.
    image_size: int = 0
    image_interpolation: Interpolation = "bicubic"
    image_channels: int = 0
    image_mean: tuple[float, ...] = ()
    image_std: tuple[float, ...] = ()
    video_frames: int = 0  # 0 = every stored frame; fewer = a temporal crop
    signal_seconds: float = 0.0  # 0 = the whole stored signal; less = a crop
    audio_seconds: float = 0.0  # 0 = the whole stored recording; less = a crop
    # Signal cleaning (mmjax/data/filters.py), on the whole stored signal before the crop.
    signal_bandpass_hz: tuple[float, ...] = ()  # () = off; (low, high), e.g. (0.5, 40.0)
    signal_notch_hz: tuple[float, ...] = ()  # mains, e.g. (50.0, 60.0): harmonics or alias too
    # '' = off | median (two-stage 200 ms / 600 ms median filter)
    signal_baseline: Literal["", "median"] = ""
    signal_standardize: bool = False  # zero mean, unit variance per recorded lead
    workers: int = 0  # input worker processes; 0 = threads in the training process


@dataclasses.dataclass
class TransformerSize(Section):
    """The sizes every transformer has; `sized` sets them from a preset."""

    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256


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
class ViTConfig(TransformerSize):
    patch_size: int = 8
    pool: Literal["cls", "mean", "map"] = "cls"  # map: attention pooling
    positions: Literal["learned", "sincos"] = "learned"
    # What imported checkpoints need (mmjax/interop): a LayerNorm before the blocks and a
    # position for the CLS token (OpenAI CLIP, timm), no bias on the patch projection
    # (CLIP), their nonlinearity and LayerNorm epsilon.
    pre_norm: bool = False
    cls_position: bool = False
    patch_bias: bool = True
    activation: Activation = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    map_mlp: bool = False  # pool=map: big_vision's MAP head (LayerNorm + MLP after the probe)


@dataclasses.dataclass
class TextConfig(TransformerSize):
    # last: the last real token (CLIP's end-of-text token; with `causal` it has read them all)
    pool: Literal["cls", "mean", "last"] = "mean"
    causal: bool = False
    # BERT compatibility (see mmjax/nn/pretrained.py): post-norm blocks, exact GELU,
    # a LayerNorm after the embeddings, token types and a 512-row position table.
    norm: Literal["pre", "post"] = "pre"
    layer_norm_eps: float = 1e-6
    activation: Activation = "gelu_tanh"
    # SigLIP: every position is attended, padding included (pool=last: the final one), and
    # the projection to the shared space has a bias (its text head).
    attend_padding: bool = False
    projection_bias: bool = False
    projection_hidden: int = 0  # > 0: an MLP projection of this width (BiomedCLIP's text.proj)
    embed_norm: bool = False
    type_vocab_size: int = 0
    max_positions: int = 0  # 0 = data.max_text_len


@dataclasses.dataclass
class VideoConfig(TransformerSize):
    tubelet_frames: int = 2
    patch_size: int = 8
    # joint (space-time) | factorised (spatial, then temporal)
    attention: Literal["joint", "factorised"] = "joint"
    # tubelets: mean | cls (| map with joint attention); frame encoders also 'last' (the
    # last real frame's state) and map; gru and lstm have no cls
    pool: Literal["mean", "cls", "last", "map"] = "mean"
    # encoder=frames: each frame through an image encoder (shared weights across frames),
    # then `temporal` over the frame embeddings at `width`, `depth` layers; padded frames
    # (data with variable frame counts) are masked out.
    encoder: Literal["tubelet", "frames"] = "tubelet"
    frame_encoder: ImageEncoder = "vit"  # vit (model.image sizes) | resnet | vgg (model.cnn)
    temporal: Literal["transformer", "gru", "lstm"] = "transformer"


@dataclasses.dataclass
class SignalConfig(TransformerSize):
    # transformer: 1-D patches through a transformer (these sizes); xresnet1d: the 1-D
    # ResNet of model.signal_cnn (Strodthoff et al. 2021's strongest family on PTB-XL)
    encoder: Literal["transformer", "xresnet1d"] = "transformer"
    patch_size: int = 25  # samples per patch, e.g. 0.25 s at 100 Hz
    pool: Literal["mean", "cls", "map"] = "mean"


@dataclasses.dataclass
class SignalCNNConfig(Section):
    """xresnet1d over multi-lead signals (model.signal.encoder="xresnet1d"): a three-conv
    stem with stride 2 and a max pool, then residual stages, each after the first halving
    the length and doubling the channels. Tokens are the final feature map's positions."""

    # blocks per stage: xresnet1d50 3,4,6,3 and xresnet1d101 3,4,23,3 with bottleneck
    stages: tuple[int, ...] = (1, 1, 1, 1)
    width: int = 32  # channels of the first stage (64 in the paper)
    kernel_size: int = 5  # the paper's 1-D kernel
    bottleneck: bool = False  # 1-k-1 blocks with 4x wider outputs
    norm: Literal["group", "batch"] = "batch"
    norm_groups: int = 32
    batch_norm_momentum: float = 0.9
    pool: Literal["concat", "mean"] = "concat"  # concat: [mean, max] over time, as fastai's


@dataclasses.dataclass
class CNNConfig(Section):
    """ResNet and VGG image encoders (model.image_encoder, video.frame_encoder). Tokens are
    the final feature map's positions, so early and hybrid fusion can use them."""

    # resnet: residual blocks per stage (ResNet-18: 2,2,2,2; ResNet-50: 3,4,6,3 + bottleneck);
    # vgg: 3x3 convolutions per stage (VGG-11: 1,1,2,2,2; VGG-16: 2,2,3,3,3). Each stage
    # after the first halves the feature map and doubles the channels.
    stages: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 32  # channels of the first stage (64 in the ImageNet models)
    bottleneck: bool = False  # resnet: 1x1-3x3-1x1 blocks with 4x wider outputs
    # group | batch (statistics over the global batch, any strategy)
    norm: Literal["group", "batch"] = "group"
    norm_groups: int = 32  # GroupNorm groups (fewer when a layer has fewer channels)
    batch_norm_momentum: float = 0.9
    # small: 3x3 stride-1 conv (<= 64 px) | imagenet: 7x7/2 conv + max pool
    stem: Literal["small", "imagenet"] = "small"
    pool: Literal["mean", "map"] = "mean"  # map: attention pooling over the final feature map


@dataclasses.dataclass
class AudioConfig(TransformerSize):
    """Heart sounds and other audio: a log-mel spectrogram cut into patches through a
    transformer (AST, Gong et al. 2021), or the raw waveform through 1-D patches."""

    encoder: Literal["spectrogram", "waveform"] = "spectrogram"
    mel_bins: int = 32
    window_ms: float = 64.0  # 25 ms suits speech at 16 kHz; heart sounds need finer bands
    hop_ms: float = 16.0
    min_hz: float = 20.0
    max_hz: float = 0.0  # 0 = Nyquist
    patch_size: int = 8  # spectrogram: square (frames x bands) patches
    waveform_patch: int = 40  # waveform: samples per patch
    pool: Literal["mean", "cls", "map"] = "mean"


@dataclasses.dataclass
class FusionConfig(TransformerSize):
    """Tokens of every modality are projected to `width`; `depth` is the joint layers
    (early), the co-attention layers (hybrid) or the bottleneck layers (bottleneck)."""

    # late: mean of the embeddings; decision: per-modality heads combined; early: one
    # transformer over all tokens; hybrid: co-attention (each modality's queries against
    # the others' keys and values); bottleneck: shared fusion tokens per layer (MBT)
    kind: Literal["late", "decision", "early", "hybrid", "bottleneck"] = "late"
    bottleneck_tokens: int = 4  # MBT's B (4 in Nagrani et al. 2021)
    # weights: a learned weight per modality; gate: weights computed from each embedding
    decision_gate: Literal["weights", "gate"] = "weights"


@dataclasses.dataclass
class DecoderConfig(TransformerSize):
    """The MAE decoders (at `width`) and the report decoder (at the text width)."""

    depth: int = 1
    # what the report decoder cross-attends to per modality: its encoder's tokens, its
    # pooled vector (the one the contrastive loss aligns with the report), or both
    memory: Literal["tokens", "pooled", "both"] = "tokens"


@dataclasses.dataclass
class ModelConfig(Section):
    image_encoder: ImageEncoder = "vit"  # vit (model.image) | resnet | vgg (model.cnn)
    image: ViTConfig = section(ViTConfig)
    cnn: CNNConfig = section(CNNConfig)
    text: TextConfig = section(TextConfig)
    video: VideoConfig = section(VideoConfig)
    signal: SignalConfig = section(SignalConfig)
    signal_cnn: SignalCNNConfig = section(SignalCNNConfig)
    audio: AudioConfig = section(AudioConfig)
    fusion: FusionConfig = section(FusionConfig)
    decoder: DecoderConfig = section(DecoderConfig)
    embed_dim: int = 64
    # 0: the contrastive loss's own, CLIP's 0.07 (softmax) or SigLIP's 0.1 (t = 10, sigmoid)
    init_temperature: float = 0.0
    # the learned logit_scale parameter is clamped to [ln min, ln max] after every update,
    # as open_clip does (1 and 100): the temperature keeps its gradient at either bound
    min_logit_scale: float = 1.0
    max_logit_scale: float = 100.0
    init_bias: float = -10.0  # sigmoid loss bias (SigLIP)
    dtype: Dtype = "float32"  # compute dtype; bfloat16 on accelerators
    param_dtype: Dtype = "float32"
    remat: bool = False  # recompute block activations in the backward pass


@dataclasses.dataclass
class OptimConfig(Section):
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
class ObjectivesConfig(Section):
    """The training losses and their weights; a weight of 0 turns an objective off."""

    contrastive: float = weight(1.0)
    contrastive_loss: Literal["softmax", "sigmoid"] = "softmax"  # CLIP InfoNCE | SigLIP
    contrastive_pairs: tuple[str, ...] = ("image-report",)  # any two modalities, 'a-b'
    mlm: float = weight(0.0)  # masked language modelling of the report
    mlm_probability: float = 0.15
    mae: float = weight(0.0)  # masked autoencoding of each of mae_modalities
    mae_modalities: tuple[Modality, ...] = ("image",)
    mae_mask_ratio: float = 0.75
    caption: float = weight(0.0)  # teacher-forced report generation
    matching: float = weight(0.0)  # image-text matching on the fused vector, hard negatives
    matching_pair: str = "image-report"
    diagnosis: float = weight(0.0)  # multi-label findings from the fused vector
    diagnosis_loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = 2.0
    class_weights: bool = False  # positives weighted by (1 - p) / p from train prevalence
    risk: float = weight(0.0)  # the binary risk outcome from the fused vector
    # fixed | uncertainty (learned, Kendall et al. 2018)
    weighting: Literal["fixed", "uncertainty"] = "fixed"


@dataclasses.dataclass
class InitConfig(Section):
    """Where parameters start; the rest are freshly initialised."""

    from_: str = ""  # `--set init.from=W`: a workdir whose latest params are loaded by name
    text_from: str = ""  # a BERT-style checkpoint (safetensors) for the report encoder


@dataclasses.dataclass
class TrainConfig(Section):
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
class ParallelConfig(Section):
    """How devices are used. mesh: jit over a (data, fsdp, tensor) mesh, parameters sharded
    by the logical-axis rules; pmap: replicated parameters, gradients averaged."""

    strategy: Literal["mesh", "pmap"] = "mesh"
    data: int = -1  # devices on the data axis; -1 takes the devices the others leave
    fsdp: int = 1  # parameters and batch split over this axis (ZeRO-3 style)
    tensor: int = 1  # matmul dimensions (mlp, heads, vocab) split over this axis


@dataclasses.dataclass
class Config(Section):
    name: str = "unnamed"
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    objectives: ObjectivesConfig = section(ObjectivesConfig)
    init: InitConfig = section(InitConfig)
    optim: OptimConfig = section(OptimConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    parallel: ParallelConfig = section(ParallelConfig)
