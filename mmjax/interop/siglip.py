"""SigLIP (and MedSigLIP) from a Hugging Face `SiglipModel` folder: a ViT without CLS
token pooled by big_vision's MAP head, a bidirectional text transformer that attends to
its padding and is pooled at the last position through a linear head, and the sigmoid
loss's logit scale and bias. SigLIP has no image projection: mmjax's is the identity."""

from pathlib import Path

import numpy as np

from mmjax.config import ModelConfig, TextConfig, ViTConfig
from mmjax.interop import blocks as b
from mmjax.interop import tensors as t

IMAGE, TEXT = b.IMAGE, b.TEXT


def model_config(vision: b.Tower, text: b.Tower, patch: int, context: int, activation: str,
                 eps: float, logit_scale: float) -> ModelConfig:
    act = b.activation(activation)
    image = ViTConfig(width=vision.width, depth=vision.depth, num_heads=vision.heads,
                      mlp_dim=vision.mlp, patch_size=patch, pool="map", map_mlp=True,
                      activation=act, layer_norm_eps=eps)
    report = TextConfig(width=text.width, depth=text.depth, num_heads=text.heads,
                        mlp_dim=text.mlp, pool="last", attend_padding=True,
                        projection_bias=True, layer_norm_eps=eps, activation=act,
                        max_positions=context)
    return ModelConfig(image=image, text=report, embed_dim=vision.width,
                       **b.scale_bounds(logit_scale))


def _entries(cfg: ModelConfig, channels: int, image_size: int) -> list[t.Entry]:
    v, x = cfg.image, cfg.text
    vision, text = (b.Tower(c.width, c.depth, c.num_heads, c.mlp_dim) for c in (v, x))
    d, patches = v.width, (image_size // v.patch_size) ** 2
    head, mmap = "vision_model.head.", (*IMAGE, "map")
    entries = [
        t.patch_conv("vision_model.embeddings.patch_embedding.weight",
                     (*IMAGE, "patch_embed", "proj"), d, channels, v.patch_size),
        t.Entry("vision_model.embeddings.patch_embedding.bias",
                (*IMAGE, "patch_embed", "proj", "bias"), (d,)),
        t.Entry("vision_model.embeddings.position_embedding.weight",
                (*IMAGE, "pos_embed", "pos"), (patches, d)),
        *t.layer_norm("vision_model.post_layernorm", (*IMAGE, "transformer", "ln_final"), d),
        t.Entry(f"{head}probe", (*mmap, "probe"), (1, 1, d)),
        *t.packed_attention(f"{head}attention", (*mmap, "attn"), d, v.num_heads),
        *t.layer_norm(f"{head}layernorm", (*mmap, "ln"), d),
        *t.linear(f"{head}mlp.fc1", (*mmap, "mlp", "fc1"), v.mlp_dim, d, (d, v.mlp_dim),
                  (v.mlp_dim,)),
        *t.linear(f"{head}mlp.fc2", (*mmap, "mlp", "fc2"), d, v.mlp_dim, (v.mlp_dim, d), (d,)),
        t.Entry("text_model.embeddings.token_embedding.weight",
                (*TEXT, "token_embed", "embedding"), (None, x.width)),
        t.Entry("text_model.embeddings.position_embedding.weight", (*TEXT, "pos_embed", "pos"),
                (x.max_positions, x.width)),
        *t.layer_norm("text_model.final_layer_norm", (*TEXT, "transformer", "ln_final"),
                      x.width),
        *t.linear("text_model.head", ("proj_report",), cfg.embed_dim, x.width,
                  (x.width, cfg.embed_dim), (cfg.embed_dim,)),
        t.Entry("logit_scale", ("logit_scale",), (1,), lambda s: s.reshape(())),
        t.Entry("logit_bias", ("logit_bias",), (1,), lambda s: s.reshape(())),
    ]
    for i in range(v.depth):
        entries += b.block_entries("vision_model.encoder.layers.", IMAGE, i, vision, b.HF_BLOCK)
    for i in range(x.depth):
        entries += b.block_entries("text_model.encoder.layers.", TEXT, i, text, b.HF_BLOCK)
    return entries


def from_hf(folder: str | Path) -> b.Imported:
    """A transformers `SiglipModel` folder: config.json and model.safetensors."""
    hf = b.read_hf_folder(folder, "siglip")
    vision, text = hf.vision, hf.text
    if not vision.get("vision_use_head", True):
        raise t.InteropError(f"{hf.path}: a SigLIP vision tower without its MAP head "
                             "(vision_use_head=false) is not supported")
    projection = text.get("projection_size", text["hidden_size"])
    if projection != vision["hidden_size"]:
        raise t.InteropError(f"{hf.path}: text projection_size {projection} differs from the "
                             f"vision width {vision['hidden_size']}")
    cfg = model_config(b.hf_tower(vision), b.hf_tower(text), vision["patch_size"],
                       text["max_position_embeddings"], hf.activation,
                       vision.get("layer_norm_eps", 1e-6), b.logit_scale(hf.tensors))
    channels = vision.get("num_channels", 3)
    params = t.assemble(hf.tensors, _entries(cfg, channels, vision["image_size"]),
                        str(hf.path), b.HF_IGNORED)
    params["proj_image"] = {"kernel": np.eye(cfg.embed_dim, dtype=np.float32)}
    return b.Imported(cfg, params, str(hf.path), vision["image_size"], channels,
                      text["max_position_embeddings"])
