"""A CLIP- or SigLIP-shaped mmjax workdir out for PyTorch users: a Hugging Face folder
(config.json, model.safetensors, preprocessor_config.json, tokenizer.json) that
`transformers.CLIPModel` / `SiglipModel.from_pretrained(folder)` loads, or, for CLIP, an
open_clip state dict with its `open_clip_config.json` for `open_clip.model.CLIP(**model_cfg)`
and `load_state_dict`. The tensors are the import's table run backwards, so export then
import gives the parameters back bit for bit. Any option those models lack is named."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from mmjax import config as config_lib
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.interop import clip, siglip
from mmjax.interop import tensors as t
from mmjax.train import pins
from mmjax.train.checkpoint import read_fields

OPEN_CLIP_INTERPOLATIONS = ("bicubic", "bilinear")  # what its image_transform takes
HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# What CLIPModel computes, as mmjax options: (section, field, value it must have).
CLIP_SHAPED = (("image", "pool", "cls"), ("image", "pre_norm", True),
               ("image", "cls_position", True), ("image", "patch_bias", False),
               ("image", "positions", "learned"), ("text", "pool", "last"),
               ("text", "causal", True), ("text", "norm", "pre"), ("text", "embed_norm", False),
               ("text", "type_vocab_size", 0), ("text", "attend_padding", False),
               ("text", "projection_bias", False), ("text", "projection_hidden", 0))


# What SiglipModel computes.
SIGLIP_SHAPED = (("image", "pool", "map"), ("image", "map_mlp", True),
                 ("image", "pre_norm", False), ("image", "cls_position", False),
                 ("image", "patch_bias", True), ("image", "positions", "learned"),
                 ("text", "pool", "last"), ("text", "causal", False), ("text", "norm", "pre"),
                 ("text", "embed_norm", False), ("text", "type_vocab_size", 0),
                 ("text", "attend_padding", True), ("text", "projection_bias", True),
                 ("text", "projection_hidden", 0))


def is_siglip(model: config_lib.ModelConfig) -> bool:
    return model.image.pool == "map" and model.text.attend_padding


def check_shaped(model: config_lib.ModelConfig) -> None:
    """Refuses, naming the first, any option CLIPModel (or, for a SigLIP-style model,
    SiglipModel) cannot express."""
    wanted = SIGLIP_SHAPED if is_siglip(model) else CLIP_SHAPED
    name = "SiglipModel" if is_siglip(model) else "CLIPModel"
    for section, field, value in wanted:
        have = getattr(getattr(model, section), field)
        if have != value:
            raise t.InteropError(
                f"model.{section}.{field}={have!r}: a "
                f"Hugging Face {name} needs {value!r}")
    if model.image_encoder != "vit":
        raise t.InteropError(f"model.image_encoder={model.image_encoder}: {name} has a ViT")
    if (model.image.activation, model.image.layer_norm_eps) != (
            model.text.activation, model.text.layer_norm_eps):
        raise t.InteropError("the image and text towers differ in activation or LayerNorm "
                             f"epsilon; {name} has one of each")


def _open_clip_config(cfg, vocab: int, image_size: int) -> dict:
    """open_clip's model config (as in its model_configs/ and hub repos) and preprocessing."""
    model = cfg.model
    if model.image.activation not in ("quick_gelu", "gelu") or model.image.layer_norm_eps != 1e-5:
        raise t.InteropError(f"open_clip's CLIP has exact or quick GELU and LayerNorm eps 1e-5, "
                             f"got {model.image.activation} and {model.image.layer_norm_eps}")
    image, text = model.image, model.text
    return {"model_cfg": {
        "embed_dim": model.embed_dim, "quick_gelu": image.activation == "quick_gelu",
        "vision_cfg": {"image_size": image_size, "layers": image.depth, "width": image.width,
                       "patch_size": image.patch_size,
                       "head_width": image.width // image.num_heads,
                       "mlp_ratio": image.mlp_dim / image.width},
        "text_cfg": {"context_length": text.max_positions, "vocab_size": vocab,
                     "width": text.width, "heads": text.num_heads, "layers": text.depth,
                     "mlp_ratio": text.mlp_dim / text.width}},
        "preprocess_cfg": {"mean": list(cfg.data.image_mean), "std": list(cfg.data.image_std),
                           "interpolation": _open_clip_interpolation(cfg.data)}}


def _open_clip_interpolation(data) -> str:
    if data.image_interpolation not in OPEN_CLIP_INTERPOLATIONS:
        raise t.InteropError(f"open_clip resizes with {' or '.join(OPEN_CLIP_INTERPOLATIONS)}; "
                             f"data.image_interpolation is {data.image_interpolation}")
    return data.image_interpolation


def _hf_towers(model, vocab: int, image_size: int, channels: int, roles) -> tuple[dict, dict]:
    """(text_config, vision_config) entries CLIPConfig and SiglipConfig share; the reader
    of both is blocks.hf_tower."""
    common = {"hidden_act": HF_ACTIVATIONS[model.image.activation],
              "layer_norm_eps": model.image.layer_norm_eps}

    def tower(section) -> dict:
        return {"hidden_size": section.width, "intermediate_size": section.mlp_dim,
                "num_hidden_layers": section.depth, "num_attention_heads": section.num_heads,
                **common}

    text = {**tower(model.text), "max_position_embeddings": model.text.max_positions,
            "vocab_size": vocab, "eos_token_id": roles.end, "pad_token_id": roles.pad}
    vision = {**tower(model.image), "image_size": image_size,
              "patch_size": model.image.patch_size, "num_channels": channels}
    return text, vision


def _siglip_config(model, vocab: int, image_size: int, channels: int, roles) -> dict:
    text, vision = _hf_towers(model, vocab, image_size, channels, roles)
    return {"architectures": ["SiglipModel"], "model_type": "siglip",
            "text_config": {**text, "projection_size": model.embed_dim},
            "vision_config": {**vision, "vision_use_head": True}}


def _hf_config(model, vocab: int, image_size: int, channels: int, roles) -> dict:
    text, vision = _hf_towers(model, vocab, image_size, channels, roles)
    projection = {"projection_dim": model.embed_dim}
    # eos != 2: CLIPModel pools the first end token, the last real one mmjax pools.
    return {"architectures": ["CLIPModel"], "model_type": "clip", **projection,
            "logit_scale_init_value": math.log(1 / config_lib.initial_temperature(model)),
            "text_config": {**text, **projection, "bos_token_id": roles.start},
            "vision_config": {**vision, **projection}}


FORMATS = ("hf", "open_clip")


def _check_identity_projection(params: dict, model) -> None:
    """SiglipModel has no image projection: mmjax's must still be the identity."""
    kernel = params["proj_image"]["kernel"]
    if kernel.shape != (model.image.width, model.image.width) or not (
            kernel == np.eye(model.image.width, dtype=kernel.dtype)).all():
        raise t.InteropError("the image projection is not the identity (it was trained, or "
                             "the model is not SigLIP's); SiglipModel has none to hold it")


def _hf_processor(data, image_size: int, siglip_shaped: bool) -> dict:
    """preprocessor_config.json: SiglipImageProcessor squashes to the size, CLIPImageProcessor
    resizes the shortest edge and centre-crops; mean, std and the resize filter are mmjax's."""
    size = {"height": image_size, "width": image_size}
    processor = ({"image_processor_type": "SiglipImageProcessor", "size": size}
                 if siglip_shaped else
                 {"image_processor_type": "CLIPImageProcessor",
                  "size": {"shortest_edge": image_size}, "crop_size": size})
    return {**processor, "image_mean": list(data.image_mean), "image_std": list(data.image_std),
            "resample": Image.Resampling[data.image_interpolation.upper()].value}


def export(workdir: str | Path, out: str | Path, step: int | None = None,
           layout: str = "hf") -> Path:
    """Writes the folder `out` (new, or empty) in `layout` from the workdir's checkpoint."""
    if layout not in FORMATS:
        raise t.InteropError(f"--format {layout}: choose from {', '.join(FORMATS)}")
    workdir, out = Path(workdir), Path(out)
    cfg = config_lib.read(workdir / "config.json")
    check_shaped(cfg.model)
    siglip_shaped = is_siglip(cfg.model)
    if siglip_shaped and layout != "hf":
        raise t.InteropError("a SigLIP-style model exports only as a Hugging Face "
                             "SiglipModel (--format hf)")
    if not cfg.data.image_mean:
        raise t.InteropError("the model standardises each image (data.image_mean is unset), "
                             "which CLIPImageProcessor cannot do; train with data.image_mean "
                             "and data.image_std set to export it")
    if out.exists() and any(out.iterdir()):
        raise t.InteropError(f"{out} is not empty; export into a new folder")
    stored, step = read_fields(workdir / "checkpoints", ("params",), step)
    params = stored["params"]
    # max_positions 0 means data.max_text_len: the table's rows say what was trained.
    context = params["encoders_report"]["pos_embed"]["pos"].shape[0]
    model = dataclasses.replace(cfg.model, text=dataclasses.replace(cfg.model.text,
                                                                    max_positions=context))
    cfg = dataclasses.replace(cfg, model=model)
    tokens = params["encoders_report"]["token_embed"]["embedding"].shape[0]
    rows = params["encoders_image"]["pos_embed"]["pos"].shape[0] - (0 if siglip_shaped else 1)
    image_size = math.isqrt(rows) * cfg.model.image.patch_size
    channels = params["encoders_image"]["patch_embed"]["proj"]["kernel"].shape[0] // (
        cfg.model.image.patch_size ** 2)
    if siglip_shaped:
        _check_identity_projection(params, cfg.model)
        entries = siglip._entries(cfg.model, channels, image_size)
    else:
        names = clip.HF_NAMES if layout == "hf" else clip.OPEN_CLIP_NAMES
        entries = clip._entries(cfg.model, channels, image_size, names)
    tensors = t.disassemble(params, entries)
    tokenizer = pins.workdir_tokenizer(workdir, cfg.data)
    # Every file's content first: a model the target cannot express writes nothing.
    if layout == "open_clip":
        files = {"open_clip_config.json": _open_clip_config(cfg, tokens, image_size)}
    else:
        files = {"config.json": (_siglip_config if siglip_shaped else _hf_config)(
                     cfg.model, tokens, image_size, channels, tokenizer_lib.specials(tokenizer)),
                 "preprocessor_config.json": _hf_processor(cfg.data, image_size, siglip_shaped)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tokenizer.to_str())
    (out / "mmjax_export.json").write_text(json.dumps(
        {"workdir": str(workdir), "step": step, "format": layout}, indent=2) + "\n")
    if layout == "open_clip":
        save_file(tensors, str(out / "open_clip_model.safetensors"))
    else:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    return out

