"""CLIP-style dual encoders (a ViT with class embedding and ln_pre, a causal text
transformer pooled at its end-of-text token, linear projections without bias, the
logit scale) from a Hugging Face `CLIPModel` folder or an OpenAI-style open_clip state
dict, as the mmjax model config and the parameters of its image and report towers."""

import math
from pathlib import Path

from mmjax.config import ModelConfig, TextConfig, ViTConfig
from mmjax.interop import blocks as b
from mmjax.interop import tensors as t

IMAGE, TEXT = b.IMAGE, b.TEXT


def model_config(vision: b.Tower, text: b.Tower, patch: int, context: int, embed_dim: int,
                 activation: str, eps: float, logit_scale: float) -> ModelConfig:
    """The mmjax config of a CLIP: pre-norm towers, CLS-pooled image tower with ln_pre and
    a position for its CLS token, causal text tower pooled at its last real token."""
    act = b.activation(activation)
    image = ViTConfig(width=vision.width, depth=vision.depth, num_heads=vision.heads,
                      mlp_dim=vision.mlp, patch_size=patch, pool="cls", pre_norm=True,
                      cls_position=True, patch_bias=False, activation=act,
                      layer_norm_eps=eps)
    report = TextConfig(width=text.width, depth=text.depth, num_heads=text.heads,
                        mlp_dim=text.mlp, pool="last", causal=True, layer_norm_eps=eps,
                        activation=act, max_positions=context)
    return ModelConfig(image=image, text=report, embed_dim=embed_dim,
                       init_temperature=math.exp(-logit_scale),
                       **b.scale_bounds(logit_scale))


def _entries(cfg: ModelConfig, channels: int, image_size: int, names: dict) -> list[t.Entry]:
    """Every tensor of a CLIP in one layout's naming (HF_NAMES, OPEN_CLIP_NAMES)."""
    v, x = cfg.image, cfg.text
    vision, text = (b.Tower(c.width, c.depth, c.num_heads, c.mlp_dim) for c in (v, x))
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
        entries += b.block_entries(names["image_blocks"], IMAGE, i, vision, names["block"])
    for i in range(x.depth):
        entries += b.block_entries(names["text_blocks"], TEXT, i, text, names["block"])
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
    "block": b.HF_BLOCK, "patch": "vision_model.embeddings.patch_embedding.weight",
    "class": "vision_model.embeddings.class_embedding",
    "image_pos": "vision_model.embeddings.position_embedding.weight",
    "ln_pre": "vision_model.pre_layrnorm", "ln_post": "vision_model.post_layernorm",
    "token": "text_model.embeddings.token_embedding.weight",
    "text_pos": "text_model.embeddings.position_embedding.weight",
    "ln_final": "text_model.final_layer_norm", "image_blocks": "vision_model.encoder.layers.",
    "text_blocks": "text_model.encoder.layers.", "projection": _hf_projection,
}
OPEN_CLIP_NAMES = {
    "block": b.OPEN_CLIP_BLOCK, "patch": "visual.conv1.weight", "class": "visual.class_embedding",
    "image_pos": "visual.positional_embedding", "ln_pre": "visual.ln_pre",
    "ln_post": "visual.ln_post", "token": "token_embedding.weight",
    "text_pos": "positional_embedding", "ln_final": "ln_final",
    "image_blocks": "visual.transformer.resblocks.", "text_blocks": "transformer.resblocks.",
    "projection": _open_clip_projection,
}
OPEN_CLIP_IGNORED = ("attn_mask",)  # a buffer older state dicts carry


def from_hf(folder: str | Path) -> b.Imported:
    """A transformers `CLIPModel` folder: config.json and model.safetensors."""
    hf = b.read_hf_folder(folder, "clip")
    vision, text, tensors = hf.vision, hf.text, hf.tensors
    logit_scale = b.logit_scale(tensors)
    cfg = model_config(b.hf_tower(vision), b.hf_tower(text), vision["patch_size"],
                       text["max_position_embeddings"], hf.config.get("projection_dim", 512),
                       hf.activation, vision.get("layer_norm_eps", 1e-5), logit_scale)
    channels = vision.get("num_channels", 3)
    entries = _entries(cfg, channels, vision["image_size"], HF_NAMES)
    params = t.assemble(tensors, entries, str(folder), b.HF_IGNORED)
    return b.Imported(cfg, params, str(folder), vision["image_size"], channels,
                      text["max_position_embeddings"])


def from_open_clip(weights: str | Path, config: str | Path) -> b.Imported:
    """An OpenAI-style open_clip CLIP (ViT-B-16 and kin): its state dict as safetensors and
    its model config JSON ({"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}, as in
    open_clip's model_configs/ or a hub repo's open_clip_config.json "model_cfg")."""
    config_path = Path(config)
    spec = b.read_json(config_path)
    spec = spec.get("model_cfg", spec)
    vision, text = (b.need(spec, key, config_path) for key in ("vision_cfg", "text_cfg"))
    if "timm_model_name" in vision or "hf_model_name" in text:
        raise t.InteropError(f"{config_path}: a timm or Hugging Face tower is not an "
                             "OpenAI-style CLIP (not supported yet)")
    tensors = t.read_safetensors(weights)

    def tower(c, width, heads):  # open_clip's CLIPVisionCfg / CLIPTextCfg defaults
        return b.Tower(width, c["layers"], heads, int(width * c.get("mlp_ratio", 4.0)))

    width = vision.get("width", 768)
    vis = tower(vision, width, width // vision.get("head_width", 64))
    txt = tower(text, text.get("width", 512), text.get("heads", 8))
    logit_scale = b.logit_scale(tensors)
    activation = "quick_gelu" if spec.get("quick_gelu") else "gelu"
    cfg = model_config(vis, txt, vision["patch_size"], text.get("context_length", 77),
                       spec["embed_dim"], activation, 1e-5, logit_scale)
    entries = _entries(cfg, 3, vision.get("image_size", 224), OPEN_CLIP_NAMES)
    params = t.assemble(tensors, entries, str(weights), OPEN_CLIP_IGNORED)
    return b.Imported(cfg, params, str(weights), vision.get("image_size", 224), 3,
                      cfg.text.max_positions)
