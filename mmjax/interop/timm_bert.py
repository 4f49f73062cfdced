"""open_clip models with a timm ViT trunk and a Hugging Face BERT text tower — BiomedCLIP
(`hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`) and its kin — from the
state dict (safetensors) and its open_clip config (`open_clip_config.json`).

Tower sizes are read from the tensors; what shapes cannot tell, the number of heads, is
`vision_cfg.heads` / `text_cfg.heads` in the config when given (an mmjax key), else the
ViT/BERT convention of 64-wide heads (BiomedCLIP's 12 and 12). The image tower is timm's
ViT (CLS token with its own position row, no ln_pre, exact GELU, LayerNorm eps 1e-6)
projected by `visual.head.proj`; the text tower is BERT pooled at [CLS] and projected by
open_clip's two-layer MLP (`text.proj`)."""

import dataclasses
import re
from pathlib import Path

from mmjax.config import ModelConfig, ViTConfig
from mmjax.interop import blocks as b
from mmjax.interop import tensors as t
from mmjax.nn import pretrained

IMAGE, TEXT = b.IMAGE, b.TEXT
TRUNK, BERT = "visual.trunk.", "text.transformer."
TIMM_BLOCK = {"ln1": "norm1", "ln2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
              "packed": "attn", "timm": True}
HEAD_WIDTH = 64  # ViT-B/L and BERT-base/large


def _count(tensors: dict, pattern: str) -> int:
    found = {int(m.group(1)) for name in tensors if (m := re.match(pattern, name))}
    return max(found) + 1 if found else 0


def _shape(tensors: dict, name: str, where) -> tuple[int, ...]:
    if name not in tensors:
        raise t.InteropError(f"{where}: no tensor '{name}' (not a timm ViT + BERT open_clip "
                             "model)")
    return tuple(tensors[name].shape)


def model_config(tensors: dict, spec: dict, where) -> ModelConfig:
    """The mmjax config, sized from the tensors (`spec`: the open_clip model config)."""
    vision, text = spec.get("vision_cfg", {}), spec.get("text_cfg", {})
    if text.get("hf_proj_type", "mlp") != "mlp" or text.get(
            "hf_pooler_type", "cls_last_hidden_state_pooler") != "cls_last_hidden_state_pooler":
        raise t.InteropError(f"{where}: only BiomedCLIP's text head (hf_proj_type 'mlp', "
                             "hf_pooler_type 'cls_last_hidden_state_pooler') is supported")
    width, _, patch, _ = _shape(tensors, f"{TRUNK}patch_embed.proj.weight", where)
    positions = _shape(tensors, f"{TRUNK}pos_embed", where)[1]
    image = ViTConfig(width=width, depth=_count(tensors, rf"{TRUNK}blocks\.(\d+)\."),
                      num_heads=vision.get("heads", width // HEAD_WIDTH),
                      mlp_dim=_shape(tensors, f"{TRUNK}blocks.0.mlp.fc1.weight", where)[0],
                      patch_size=patch, pool="cls", cls_position=True, activation="gelu")
    token = _shape(tensors, f"{BERT}embeddings.word_embeddings.weight", where)[1]
    hidden, _ = _shape(tensors, "text.proj.0.weight", where)
    embed_dim, _ = _shape(tensors, "text.proj.2.weight", where)
    report = pretrained.bert_text_config({
        "hidden_size": token,
        "num_hidden_layers": _count(tensors, rf"{BERT}encoder\.layer\.(\d+)\."),
        "num_attention_heads": text.get("heads", token // HEAD_WIDTH),
        "intermediate_size": _shape(
            tensors, f"{BERT}encoder.layer.0.intermediate.dense.weight", where)[0],
        "max_position_embeddings": _shape(
            tensors, f"{BERT}embeddings.position_embeddings.weight", where)[0],
        "type_vocab_size": _shape(tensors, f"{BERT}embeddings.token_type_embeddings.weight",
                                  where)[0],
        "layer_norm_eps": text.get("layer_norm_eps", 1e-12)}, pool="cls")
    report = dataclasses.replace(report, projection_hidden=hidden)
    if (positions - 1) != (spec.get("vision_cfg", {}).get("image_size", 224) // patch) ** 2:
        raise t.InteropError(f"{where}: {positions - 1} patch positions do not fit image_size "
                             f"{vision.get('image_size', 224)} at patch {patch}")
    return ModelConfig(image=image, text=report, embed_dim=embed_dim,
                       **b.scale_bounds(b.logit_scale(tensors)))


def _entries(cfg: ModelConfig, channels: int) -> list[t.Entry]:
    v, x, e = cfg.image, cfg.text, cfg.embed_dim
    vision = b.Tower(v.width, v.depth, v.num_heads, v.mlp_dim)
    entries = [
        t.patch_conv(f"{TRUNK}patch_embed.proj.weight", (*IMAGE, "patch_embed", "proj"),
                     v.width, channels, v.patch_size),
        t.Entry(f"{TRUNK}patch_embed.proj.bias", (*IMAGE, "patch_embed", "proj", "bias"),
                (v.width,)),
        t.Entry(f"{TRUNK}cls_token", (*IMAGE, "cls"), (1, 1, v.width)),
        t.Entry(f"{TRUNK}pos_embed", (*IMAGE, "pos_embed", "pos"), (1, None, v.width),
                lambda p: p[0]),
        *t.layer_norm(f"{TRUNK}norm", (*IMAGE, "transformer", "ln_final"), v.width),
        *t.linear("visual.head.proj", ("proj_image",), e, v.width, (v.width, e), None),
        *t.linear("text.proj.0", ("proj_report", "hidden"), x.projection_hidden, x.width,
                  (x.width, x.projection_hidden), None),
        *t.linear("text.proj.2", ("proj_report", "out"), e, x.projection_hidden,
                  (x.projection_hidden, e), None),
        t.Entry("logit_scale", ("logit_scale",), ()),
        *(dataclasses.replace(entry, name=BERT + entry.name, path=(*TEXT, *entry.path))
          for entry in pretrained.bert_entries(x)),
    ]
    for i in range(v.depth):
        entries += b.block_entries(f"{TRUNK}blocks.", IMAGE, i, vision, TIMM_BLOCK)
    return entries


def from_open_clip(weights: str | Path, config: str | Path) -> b.Imported:
    """A timm-trunk + BERT open_clip model: its state dict as safetensors and its config
    JSON (`open_clip_config.json`, whose "model_cfg" is used, or that dict itself)."""
    config_path = Path(config)
    spec = b.read_json(config_path)
    spec = spec.get("model_cfg", spec)
    if "timm_model_name" not in spec.get("vision_cfg", {}):
        raise t.InteropError(f"{config_path}: no vision_cfg.timm_model_name (for an "
                             "OpenAI-style CLIP use mmjax.interop.clip.from_open_clip)")
    tensors = t.read_safetensors(weights)
    cfg = model_config(tensors, spec, weights)
    channels = _shape(tensors, f"{TRUNK}patch_embed.proj.weight", weights)[1]
    params = t.assemble(tensors, _entries(cfg, channels), str(weights),
                        (f"{BERT}embeddings.position_ids", f"{BERT}pooler."))
    size = spec["vision_cfg"].get("image_size", 224)
    context = spec["text_cfg"].get("context_length", 77)  # open_clip's default
    return b.Imported(cfg, params, str(weights), size, channels, context)
