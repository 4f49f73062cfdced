"""Pretrained BERT-family weights, stored as safetensors under Hugging Face names, for the
text encoder (e.g. sentence-transformers/all-MiniLM-L6-v2).

Tensors are read with safetensors' numpy API, so importing weights never needs torch.
The matching tokenizer is the checkpoint's vocab.txt through `mmjax.data.tokenizer.load`
(or `data.tokenizer=<dir>/vocab.txt`), which keeps the checkpoint's token ids.
"""

from pathlib import Path

import jax
from flax import traverse_util

from mmjax.config import TextConfig
from mmjax.interop import tensors
from mmjax.interop.tensors import Entry

# Checkpoint entries that are not part of the encoder: the pooler and pretraining heads
# (unused by mmjax) and position_ids (a constant buffer). Skipped; anything else unknown
# is an error, since it means the checkpoint is not the architecture the config describes.
IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


def bert_text_config(hf_config: dict, pool: str = "mean") -> TextConfig:
    """The TextConfig of a Hugging Face BERT `config.json` (its dict)."""
    kind = hf_config.get("model_type", "bert")
    if kind != "bert":
        raise ValueError(f"model_type '{kind}' is not supported (only 'bert'; others differ "
                         "in names or position ids)")
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act '{act}' is not supported (BERT's exact 'gelu' is)")
    positions = hf_config.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ValueError(f"position_embedding_type '{positions}' is not supported "
                         "(only 'absolute')")
    return TextConfig(
        width=hf_config["hidden_size"],
        depth=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        mlp_dim=hf_config["intermediate_size"],
        pool=pool,
        norm="post",
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        activation="gelu",
        embed_norm=True,
        type_vocab_size=hf_config.get("type_vocab_size", 2),
        max_positions=hf_config["max_position_embeddings"],
    )


def bert_entries(config: TextConfig) -> list[Entry]:
    """Every tensor of a BERT encoder (Hugging Face names without the `bert.` prefix) onto
    TextEncoder's parameter paths."""
    d, f = config.width, config.mlp_dim
    layer_norm, linear = tensors.layer_norm, tensors.linear
    entries = [
        Entry("embeddings.word_embeddings.weight", ("token_embed", "embedding"), (None, d)),
        Entry("embeddings.position_embeddings.weight", ("pos_embed", "pos"),
              (config.max_positions, d)),
        Entry("embeddings.token_type_embeddings.weight", ("type_embed", "embedding"),
              (config.type_vocab_size, d)),
        *layer_norm("embeddings.LayerNorm", ("embed_ln",), d),
    ]
    for i in range(config.depth):
        src, dst = f"encoder.layer.{i}", ("transformer", f"block_{i}")
        entries += [
            *tensors.attention((*dst, "attn"), d, config.num_heads,
                               *(f"{src}.attention.self.{p}" for p in ("query", "key", "value")),
                               f"{src}.attention.output.dense"),
            *layer_norm(f"{src}.attention.output.LayerNorm", (*dst, "ln_attn"), d),
            *linear(f"{src}.intermediate.dense", (*dst, "mlp", "fc1"), f, d, (d, f), (f,)),
            *linear(f"{src}.output.dense", (*dst, "mlp", "fc2"), d, f, (f, d), (d,)),
            *layer_norm(f"{src}.output.LayerNorm", (*dst, "ln_mlp"), d),
        ]
    return entries


def _canonical_name(name: str) -> str:
    """Drops the `bert.` prefix of task models and renames TF-era LayerNorm gamma/beta."""
    name = name.removeprefix("bert.")
    if name.endswith("LayerNorm.gamma"):
        return name.removesuffix("gamma") + "weight"
    if name.endswith("LayerNorm.beta"):
        return name.removesuffix("beta") + "bias"
    return name


def _check_bert_shaped(config: TextConfig) -> None:
    wanted = {"norm": "post", "embed_norm": True, "causal": False}
    for field, value in wanted.items():
        if getattr(config, field) != value:
            raise ValueError(f"BERT weights need a TextConfig with {field}={value!r}, "
                             f"got {getattr(config, field)!r}")
    if config.width % config.num_heads:
        raise ValueError(f"width {config.width} is not divisible by num_heads "
                         f"{config.num_heads}")
    if not config.type_vocab_size or not config.max_positions:
        raise ValueError("BERT weights need a TextConfig with type_vocab_size and "
                         "max_positions set (see bert_text_config)")


def load_bert_params(path: str | Path, config: TextConfig) -> dict:
    """TextEncoder params (float32 numpy, the tree under 'params') from a BERT checkpoint.

    Raises InteropError naming the first missing, mis-shaped or unexpected tensors;
    IGNORED_PREFIXES are skipped.
    """
    _check_bert_shaped(config)
    named = {_canonical_name(name): array
             for name, array in tensors.read_safetensors(path).items()}
    return tensors.assemble(named, bert_entries(config), f"{path} ({config.depth}-layer BERT "
                            f"of width {config.width})", ignored=IGNORED_PREFIXES)


def load_into(params: dict, loaded: dict, prefix: tuple[str, ...] = ("encoders_report",)):
    """`params` with the subtree at `prefix` replaced by `loaded`, leaf for leaf.

    The default prefix is MultimodalModel's text encoder. Both trees must have the same
    leaves and shapes (an InteropError names the first that differs); each new leaf keeps
    the dtype and sharding of the leaf it replaces. `params` itself is not modified.
    """
    old = {key[len(prefix):] for key in traverse_util.flatten_dict(params)
           if key[:len(prefix)] == prefix}
    if not old:
        raise tensors.InteropError(f"no parameters under {'/'.join(prefix)}")
    if lacking := sorted(old - traverse_util.flatten_dict(loaded).keys()):
        raise tensors.InteropError(f"loaded weights lack '{'/'.join(prefix + lacking[0])}'")
    nested = loaded
    for part in reversed(prefix):
        nested = {part: nested}
    merged = tensors.merge(params, nested)
    return jax.tree.map(lambda new, target: jax.device_put(new, getattr(target, "sharding",
                                                                        None)),
                        merged, params)
