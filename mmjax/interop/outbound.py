"""A CLIP-shaped mmjax workdir out for PyTorch users: a Hugging Face `CLIPModel` folder
(config.json, model.safetensors, preprocessor_config.json, tokenizer.json) that
`transformers.CLIPModel.from_pretrained(folder)` loads, or an open_clip state dict with its
`open_clip_config.json` for `open_clip.model.CLIP(**model_cfg)` + `load_state_dict`. The
tensors are the import's table run backwards, so export then import gives the parameters
back bit for bit. Only architectures CLIP has can go out; any other option is named."""

import json
import math
from pathlib import Path

from safetensors.numpy import save_file

from mmjax import config as config_lib
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.interop import clip
from mmjax.interop import tensors as t
from mmjax.train import pins
from mmjax.train.checkpoint import read_fields

HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# What CLIPModel computes, as mmjax options: (section, field, value it must have).
CLIP_SHAPED = (("image", "pool", "cls"), ("image", "pre_norm", True),
               ("image", "cls_position", True), ("image", "patch_bias", False),
               ("image", "positions", "learned"), ("text", "pool", "last"),
               ("text", "causal", True), ("text", "norm", "pre"), ("text", "embed_norm", False),
               ("text", "type_vocab_size", 0), ("text", "attend_padding", False),
               ("text", "projection_bias", False), ("text", "projection_hidden", 0))


def check_clip_shaped(model: config_lib.ModelConfig) -> None:
    """Refuses, naming the first, any option CLIPModel cannot express."""
    for section, field, value in CLIP_SHAPED:
        have = getattr(getattr(model, section), field)
        if have != value:
            raise t.InteropError(
                f"model.{section}.{field}={have!r}: a "
                f"Hugging Face CLIPModel needs {value!r}")
    if model.image_encoder != "vit":
        raise t.InteropError(f"model.image_encoder={model.image_encoder}: CLIPModel has a ViT")
    if (model.image.activation, model.image.layer_norm_eps) != (
            model.text.activation, model.text.layer_norm_eps):
        raise t.InteropError("the image and text towers differ in activation or LayerNorm "
                             "epsilon; CLIPModel has one of each")


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
        "preprocess_cfg": {"mean": list(cfg.data.image_mean), "std": list(cfg.data.image_std)}}


def _hf_config(model, vocab: int, image_size: int, channels: int, roles) -> dict:
    act = HF_ACTIVATIONS[model.image.activation]
    eps = model.image.layer_norm_eps
    text = {"hidden_size": model.text.width, "intermediate_size": model.text.mlp_dim,
            "num_hidden_layers": model.text.depth, "num_attention_heads": model.text.num_heads,
            "max_position_embeddings": model.text.max_positions, "vocab_size": vocab,
            "hidden_act": act, "layer_norm_eps": eps, "projection_dim": model.embed_dim,
            # eos != 2: CLIPModel pools the first end token, the last real one mmjax pools.
            "eos_token_id": roles.end, "bos_token_id": roles.start, "pad_token_id": roles.pad}
    vision = {"hidden_size": model.image.width, "intermediate_size": model.image.mlp_dim,
              "num_hidden_layers": model.image.depth, "num_attention_heads":
                  model.image.num_heads, "image_size": image_size,
              "patch_size": model.image.patch_size, "num_channels": channels,
              "hidden_act": act, "layer_norm_eps": eps, "projection_dim": model.embed_dim}
    return {"architectures": ["CLIPModel"], "model_type": "clip",
            "projection_dim": model.embed_dim,
            "logit_scale_init_value": math.log(1 / model.init_temperature),
            "text_config": text, "vision_config": vision}


FORMATS = ("hf", "open_clip")


def export(workdir: str | Path, out: str | Path, step: int | None = None,
           layout: str = "hf") -> Path:
    """Writes the folder `out` (new, or empty) in `layout` from the workdir's checkpoint."""
    if layout not in FORMATS:
        raise t.InteropError(f"--format {layout}: choose from {', '.join(FORMATS)}")
    workdir, out = Path(workdir), Path(out)
    cfg = config_lib.read(workdir / "config.json")
    check_clip_shaped(cfg.model)
    if not cfg.data.image_mean:
        raise t.InteropError("the model standardises each image (data.image_mean is unset), "
                             "which CLIPImageProcessor cannot do; train with data.image_mean "
                             "and data.image_std set to export it")
    if out.exists() and any(out.iterdir()):
        raise t.InteropError(f"{out} is not empty; export into a new folder")
    stored, step = read_fields(workdir / "checkpoints", ("params",), step)
    params = stored["params"]
    tokens = params["encoders_report"]["token_embed"]["embedding"].shape[0]
    rows = params["encoders_image"]["pos_embed"]["pos"].shape[0] - 1
    image_size = math.isqrt(rows) * cfg.model.image.patch_size
    channels = params["encoders_image"]["patch_embed"]["proj"]["kernel"].shape[0] // (
        cfg.model.image.patch_size ** 2)
    names = clip.HF_NAMES if layout == "hf" else clip.OPEN_CLIP_NAMES
    tensors = t.disassemble(params, clip._entries(cfg.model, channels, image_size, names))
    tokenizer = pins.workdir_tokenizer(workdir, cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tokenizer.to_str())
    (out / "mmjax_export.json").write_text(json.dumps(
        {"workdir": str(workdir), "step": step, "format": layout}, indent=2) + "\n")
    if layout == "open_clip":
        save_file(tensors, str(out / "open_clip_model.safetensors"))
        (out / "open_clip_config.json").write_text(json.dumps(
            _open_clip_config(cfg, tokens, image_size), indent=2) + "\n")
        return out
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = _hf_config(cfg.model, tokens, image_size, channels,
                        tokenizer_lib.specials(tokenizer))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    mean, std = list(cfg.data.image_mean), list(cfg.data.image_std)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "image_mean": mean, "image_std": std,
         "size": {"shortest_edge": image_size},
         "crop_size": {"height": image_size, "width": image_size}}, indent=2) + "\n")
    return out

