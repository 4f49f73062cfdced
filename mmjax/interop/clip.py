"""CLIP-style dual encoders (a ViT with class embedding and ln_pre, a causal text
transformer pooled at its end-of-text token, linear projections without bias, the
logit scale) from a Hugging Face `CLIPModel` folder or an OpenAI-style open_clip state
dict, as the mmjax model config and the parameters of its image and report towers."""

import dataclasses
import json
import math
from pathlib import Path

from mmjax.config import ModelConfig, TextConfig, ViTConfig
from mmjax.interop import tensors as t

# Position-id buffers some checkpoints carry; the positions are their row numbers.
IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
IMAGE, TEXT = ("encoders_image",), ("encoders_report",)


@dataclasses.dataclass(frozen=True)
class Tower:
    """The sizes one transformer tower is built with."""

    width: int
    depth: int
    heads: int
    mlp: int


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


def model_config(vision: Tower, text: Tower, patch: int, context: int, embed_dim: int,
                 activation: str, eps: float, logit_scale: float) -> ModelConfig:
    """The mmjax config of a CLIP: pre-norm towers, CLS-pooled image tower with ln_pre and
    a position for its CLS token, causal text tower pooled at its last real token."""
    if activation not in ACTIVATIONS:
        raise t.InteropError(f"hidden_act '{activation}' is not supported; supported: "
                             f"{', '.join(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    image = ViTConfig(width=vision.width, depth=vision.depth, num_heads=vision.heads,
                      mlp_dim=vision.mlp, patch_size=patch, pool="cls", pre_norm=True,
                      cls_position=True, patch_bias=False, activation=act,
                      layer_norm_eps=eps)
    report = TextConfig(width=text.width, depth=text.depth, num_heads=text.heads,
                        mlp_dim=text.mlp, pool="last", causal=True, layer_norm_eps=eps,
                        activation=act, max_positions=context)
    return ModelConfig(image=image, text=report, embed_dim=embed_dim,
                       init_temperature=math.exp(-logit_scale))


def _block_entries(source: str, tower: tuple[str, ...], i: int, size: Tower,
                   names: dict) -> list[t.Entry]:
    src, dst = f"{source}{i}.", (*tower, "transformer", f"block_{i}")
    d, f = size.width, size.mlp
    attn = (t.attention((*dst, "attn"), d, size.heads, *(src + names[k] for k in "qkvo"))
            if "q" in names else t.packed_attention(src + names["packed"], (*dst, "attn"), d,
                                                    size.heads))
    return [*t.layer_norm(src + names["ln1"], (*dst, "ln_attn"), d), *attn,
            *t.layer_norm(src + names["ln2"], (*dst, "ln_mlp"), d),
            *t.linear(src + names["fc1"], (*dst, "mlp", "fc1"), f, d, (d, f), (f,)),
            *t.linear(src + names["fc2"], (*dst, "mlp", "fc2"), d, f, (f, d), (d,))]


HF_BLOCK = {"ln1": "layer_norm1", "ln2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
            "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
            "o": "self_attn.out_proj"}
OPEN_CLIP_BLOCK = {"ln1": "ln_1", "ln2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj",
                   "packed": "attn"}


def _entries(cfg: ModelConfig, channels: int, image_size: int, names: dict) -> list[t.Entry]:
    """Every tensor of a CLIP in one layout's naming (HF_NAMES, OPEN_CLIP_NAMES)."""
    v, x = cfg.image, cfg.text
    vision, text = (Tower(c.width, c.depth, c.num_heads, c.mlp_dim) for c in (v, x))
    patches = 1 + (image_size // v.patch_size) ** 2
    e = cfg.embed_dim
    entries = [
        t.patch_conv(names["patch"], (*IMAGE, "patch_embed", "proj"), v.width, channels,
                     v.patch_size),
        t.Entry(names["class"], (*IMAGE, "cls"), (v.width,), lambda c: c.reshape(1, 1, -1)),
        t.Entry(names["image_pos"], (*IMAGE, "pos_embed", "pos"), (patches, v.width)),
        *t.layer_norm(names["ln_pre"], (*IMAGE, "ln_pre"), v.width),
        *t.layer_norm(names["ln_post"], (*IMAGE, "transformer", "ln_final"), v.width),
        t.Entry(names["token"], (*TEXT, "token_embed", "embedding"), (None, x.width)),
        t.Entry(names["text_pos"], (*TEXT, "pos_embed", "pos"), (x.max_positions, x.width)),
        *t.layer_norm(names["ln_final"], (*TEXT, "transformer", "ln_final"), x.width),
        t.Entry("logit_scale", ("logit_scale",), ()),
        names["projection"]("image", v.width, e),
        names["projection"]("report", x.width, e),
    ]
    for i in range(v.depth):
        entries += _block_entries(names["image_blocks"], IMAGE, i, vision, names["block"])
    for i in range(x.depth):
        entries += _block_entries(names["text_blocks"], TEXT, i, text, names["block"])
    return entries


def _hf_projection(modality: str, width: int, embed_dim: int) -> t.Entry:
    name = {"image": "visual_projection", "report": "text_projection"}[modality]
    return t.Entry(f"{name}.weight", (f"proj_{modality}", "kernel"), (embed_dim, width),
                   lambda w: w.T)


def _open_clip_projection(modality: str, width: int, embed_dim: int) -> t.Entry:
    name = {"image": "visual.proj", "report": "text_projection"}[modality]
    return t.Entry(name, (f"proj_{modality}", "kernel"), (width, embed_dim))


# Each layout's tensor names.
HF_NAMES = {
    "block": HF_BLOCK, "patch": "vision_model.embeddings.patch_embedding.weight",
    "class": "vision_model.embeddings.class_embedding",
    "image_pos": "vision_model.embeddings.position_embedding.weight",
    "ln_pre": "vision_model.pre_layrnorm", "ln_post": "vision_model.post_layernorm",
    "token": "text_model.embeddings.token_embedding.weight",
    "text_pos": "text_model.embeddings.position_embedding.weight",
    "ln_final": "text_model.final_layer_norm", "image_blocks": "vision_model.encoder.layers.",
    "text_blocks": "text_model.encoder.layers.", "projection": _hf_projection,
}
OPEN_CLIP_NAMES = {
    "block": OPEN_CLIP_BLOCK, "patch": "visual.conv1.weight", "class": "visual.class_embedding",
    "image_pos": "visual.positional_embedding", "ln_pre": "visual.ln_pre",
    "ln_post": "visual.ln_post", "token": "token_embedding.weight",
    "text_pos": "positional_embedding", "ln_final": "ln_final",
    "image_blocks": "visual.transformer.resblocks.", "text_blocks": "transformer.resblocks.",
    "projection": _open_clip_projection,
}
OPEN_CLIP_IGNORED = ("attn_mask",)  # a buffer older state dicts carry


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise t.InteropError(f"{path}: cannot read it ({e})") from None


def _need(config: dict, key: str, where: Path):
    if key not in config:
        raise t.InteropError(f"{where}: no '{key}'")
    return config[key]


def from_hf(folder: str | Path) -> Imported:
    """A transformers `CLIPModel` folder: config.json and model.safetensors."""
    folder = Path(folder)
    config_path = folder / "config.json"
    config = _read_json(config_path)
    if config.get("model_type") != "clip":
        raise t.InteropError(f"{config_path}: model_type '{config.get('model_type')}' is not "
                             "'clip'")
    vision, text = (_need(config, key, config_path) for key in ("vision_config", "text_config"))
    acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
    if len(acts) > 1:
        raise t.InteropError(f"{config_path}: the towers use different activations {acts}")
    tensors = t.read_safetensors(folder / "model.safetensors")
    logit_scale = float(tensors["logit_scale"]) if "logit_scale" in tensors else 0.0

    def tower(c):
        return Tower(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                     c["intermediate_size"])

    cfg = model_config(tower(vision), tower(text), vision["patch_size"],
                       text["max_position_embeddings"], config.get("projection_dim", 512),
                       acts.pop(), vision.get("layer_norm_eps", 1e-5), logit_scale)
    channels = vision.get("num_channels", 3)
    entries = _entries(cfg, channels, vision["image_size"], HF_NAMES)
    params = t.assemble(tensors, entries, str(folder), IGNORED)
    return Imported(cfg, params, str(folder), vision["image_size"], channels)


def from_open_clip(weights: str | Path, config: str | Path) -> Imported:
    """An OpenAI-style open_clip CLIP (ViT-B-16 and kin): its state dict as safetensors and
    its model config JSON ({"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}, as in
    open_clip's model_configs/ or a hub repo's open_clip_config.json "model_cfg")."""
    config_path = Path(config)
    spec = _read_json(config_path)
    spec = spec.get("model_cfg", spec)
    vision, text = (_need(spec, key, config_path) for key in ("vision_cfg", "text_cfg"))
    if "timm_model_name" in vision or "hf_model_name" in text:
        raise t.InteropError(f"{config_path}: a timm or Hugging Face tower is not an "
                             "OpenAI-style CLIP (not supported yet)")
    tensors = t.read_safetensors(weights)

    def tower(c, width, heads):  # open_clip's CLIPVisionCfg / CLIPTextCfg defaults
        return Tower(width, c["layers"], heads, int(width * c.get("mlp_ratio", 4.0)))

    width = vision.get("width", 768)
    vis = tower(vision, width, width // vision.get("head_width", 64))
    txt = tower(text, text.get("width", 512), text.get("heads", 8))
    logit_scale = float(tensors["logit_scale"]) if "logit_scale" in tensors else 0.0
    activation = "quick_gelu" if spec.get("quick_gelu") else "gelu"
    cfg = model_config(vis, txt, vision["patch_size"], text.get("context_length", 77),
                       spec["embed_dim"], activation, 1e-5, logit_scale)
    entries = _entries(cfg, 3, vision.get("image_size", 224), OPEN_CLIP_NAMES)
    params = t.assemble(tensors, entries, str(weights), OPEN_CLIP_IGNORED)
    return Imported(cfg, params, str(weights), vision.get("image_size", 224), 3)
