"""What the transformer checkpoints mmjax imports share: tower sizes, a pre-norm block's
tensors in the Hugging Face and open_clip namings, and reading their JSON configs."""

import dataclasses
import json
import math
from pathlib import Path

from mmjax.config import ModelConfig
from mmjax.interop import tensors as t

IMAGE, TEXT = ("encoders_image",), ("encoders_report",)  # the towers' parameter paths
# Position-id buffers Hugging Face checkpoints carry; the positions are their row numbers.
HF_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
# Checkpoint activation names -> mmjax's (mmjax/nn/transformer.py ACTIVATIONS).
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise t.InteropError(f"hidden_act '{name}' is not supported; supported: "
                             f"{', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class Imported:
    """A checkpoint as mmjax sees it: the model config (image + report towers) and the
    parameters of those towers, their projections and the logit scale (the rest of a
    model built from `model` is freshly initialised)."""

    model: ModelConfig
    params: dict
    source: str
    image_size: int
    channels: int
    context: int  # the tokens its text tower was trained on (data.max_text_len)


def logit_scale(tensors: dict) -> float:
    """The checkpoint's log logit scale (CLIP's log(1/temperature)); absent: 0."""
    return float(tensors["logit_scale"].reshape(())) if "logit_scale" in tensors else 0.0


def scale_bounds(log_scale: float) -> dict:
    """model.min/max_logit_scale, open_clip's 1 and 100 widened to take the checkpoint's own
    value (SigLIP's learned scale is above 100), with a margin float32 rounding cannot
    cross, so the clamp leaves it alone."""
    scale = math.exp(log_scale)
    return {"min_logit_scale": min(1.0, 0.999 * scale),
            "max_logit_scale": max(100.0, float(math.ceil(scale)))}


@dataclasses.dataclass(frozen=True)
class Tower:
    """The sizes one transformer tower is built with."""

    width: int
    depth: int
    heads: int
    mlp: int


def hf_tower(config: dict) -> Tower:
    """The sizes in a Hugging Face vision or text config."""
    return Tower(config["hidden_size"], config["num_hidden_layers"],
                 config["num_attention_heads"], config["intermediate_size"])


def block_entries(source: str, tower: tuple[str, ...], i: int, size: Tower,
                  names: dict) -> list[t.Entry]:
    """Block i of a pre-norm stack: tensors `{source}{i}.<names[...]>` onto
    `tower/transformer/block_i` (separate q/k/v when `names` has them, else packed)."""
    src, dst = f"{source}{i}.", (*tower, "transformer", f"block_{i}")
    d, f = size.width, size.mlp
    if "q" in names:
        attn = t.attention((*dst, "attn"), d, size.heads, *(src + names[k] for k in "qkvo"))
    else:
        attn = t.packed_attention(src + names["packed"], (*dst, "attn"), d, size.heads,
                                  timm=names.get("timm", False))
    return [*t.layer_norm(src + names["ln1"], (*dst, "ln_attn"), d), *attn,
            *t.layer_norm(src + names["ln2"], (*dst, "ln_mlp"), d),
            *t.linear(src + names["fc1"], (*dst, "mlp", "fc1"), f, d, (d, f), (f,)),
            *t.linear(src + names["fc2"], (*dst, "mlp", "fc2"), d, f, (f, d), (d,))]


HF_BLOCK = {"ln1": "layer_norm1", "ln2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
            "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
            "o": "self_attn.out_proj"}
OPEN_CLIP_BLOCK = {"ln1": "ln_1", "ln2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj",
                   "packed": "attn"}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise t.InteropError(f"{path}: cannot read it ({e})") from None


def need(config: dict, key: str, where: Path):
    if key not in config:
        raise t.InteropError(f"{where}: no '{key}'")
    return config[key]


@dataclasses.dataclass(frozen=True)
class HfFolder:
    """A Hugging Face dual-encoder folder, read: its config sections and tensors."""

    path: Path
    config: dict
    vision: dict
    text: dict
    activation: str  # both towers'
    tensors: dict


def read_hf_folder(folder: str | Path, model_type: str) -> HfFolder:
    """config.json (of `model_type`, both towers with one activation) and
    model.safetensors of a Hugging Face folder."""
    folder = Path(folder)
    config_path = folder / "config.json"
    config = read_json(config_path)
    if config.get("model_type") != model_type:
        raise t.InteropError(f"{config_path}: model_type '{config.get('model_type')}' is not "
                             f"'{model_type}'")
    vision, text = (need(config, key, config_path) for key in ("vision_config", "text_config"))
    acts = {section.get("hidden_act") for section in (vision, text)} - {None}
    if len(acts) > 1:
        raise t.InteropError(f"{config_path}: the towers use different activations "
                             f"{sorted(acts)}")
    default = {"clip": "quick_gelu", "siglip": "gelu_pytorch_tanh"}[model_type]
    return HfFolder(folder, config, vision, text, acts.pop() if acts else default,
                    t.read_safetensors(folder / "model.safetensors"))
