"""SigLIP checkpoints as big_vision writes them (`.npz`, "params/img/...", "params/txt/...",
"params/t", "params/b"; loaded with allow_pickle=False): the same model as
`mmjax.interop.siglip` in flax's own layouts, so kernels need no transposes. Sizes are read
from the tensors; blocks may be unrolled (`encoderblock_0`, ...) or scanned (one
`encoderblock` with a leading depth axis)."""

import re
from pathlib import Path

import numpy as np

from mmjax.config import ModelConfig
from mmjax.interop import blocks as b
from mmjax.interop import siglip
from mmjax.interop import tensors as t

IMAGE, TEXT = b.IMAGE, b.TEXT
TOWERS = {"img": "img/Transformer", "txt": "txt/Encoder_0"}


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array, with the "params/" prefix big_vision's saver adds dropped."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name.removeprefix("params/"): archive[name] for name in archive.files}
    except (OSError, ValueError) as e:
        raise t.InteropError(f"{path}: not a readable .npz checkpoint ({e})") from None


def _depth(tensors: dict, tower: str) -> tuple[int, bool]:
    """(blocks, scanned) of a tower."""
    stacked = f"{tower}/encoderblock/LayerNorm_0/scale"
    if stacked in tensors:
        return tensors[stacked].shape[0], True
    found = {int(m.group(1)) for name in tensors
             if (m := re.match(rf"{re.escape(tower)}/encoderblock_(\d+)/", name))}
    return (max(found) + 1 if found else 0), False


def _shape(tensors: dict, name: str, where) -> tuple[int, ...]:
    if name not in tensors:
        raise t.InteropError(f"{where}: no tensor '{name}' (not a big_vision SigLIP)")
    return tuple(tensors[name].shape)


def _block(source: str, dst: tuple[str, ...], d: int, heads: int, mlp: int,
           layer: int | None) -> list[t.Entry]:
    """One flax encoder block; `layer`: its index along a scanned stack's first axis."""
    def entry(name: str, path: tuple[str, ...], shape: tuple[int, ...]) -> t.Entry:
        if layer is None:
            return t.Entry(f"{source}/{name}", path, shape)
        return t.Entry(f"{source}/{name}", path, (None, *shape), lambda w, i=layer: w[i])

    k = d // heads
    entries = []
    for norm, where in (("LayerNorm_0", "ln_attn"), ("LayerNorm_1", "ln_mlp")):
        entries += [entry(f"{norm}/scale", (*dst, where, "scale"), (d,)),
                    entry(f"{norm}/bias", (*dst, where, "bias"), (d,))]
    attention = "MultiHeadDotProductAttention_0"
    for part in ("query", "key", "value"):
        entries += [entry(f"{attention}/{part}/kernel", (*dst, "attn", part, "kernel"),
                          (d, heads, k)),
                    entry(f"{attention}/{part}/bias", (*dst, "attn", part, "bias"), (heads, k))]
    entries += [entry(f"{attention}/out/kernel", (*dst, "attn", "out", "kernel"), (heads, k, d)),
                entry(f"{attention}/out/bias", (*dst, "attn", "out", "bias"), (d,))]
    for dense, fc, shape in (("Dense_0", "fc1", (d, mlp)), ("Dense_1", "fc2", (mlp, d))):
        entries += [entry(f"MlpBlock_0/{dense}/kernel", (*dst, "mlp", fc, "kernel"), shape),
                    entry(f"MlpBlock_0/{dense}/bias", (*dst, "mlp", fc, "bias"), (shape[1],))]
    return entries


def _tower(tensors: dict, key: str, path: tuple[str, ...], d: int, heads: int,
           mlp: int) -> list[t.Entry]:
    tower = TOWERS[key]
    depth, scanned = _depth(tensors, tower)
    entries = []
    for i in range(depth):
        source = f"{tower}/encoderblock" if scanned else f"{tower}/encoderblock_{i}"
        entries += _block(source, (*path, "transformer", f"block_{i}"), d, heads, mlp,
                          i if scanned else None)
    final = (*path, "transformer", "ln_final")
    return entries + [t.Entry(f"{tower}/encoder_norm/scale", (*final, "scale"), (d,)),
                      t.Entry(f"{tower}/encoder_norm/bias", (*final, "bias"), (d,))]


def from_npz(path: str | Path) -> b.Imported:
    """A big_vision SigLIP `.npz` (e.g. webli_en_b16_224_*.npz)."""
    tensors = read_npz(path)
    if "img/head/kernel" in tensors:
        raise t.InteropError(f"{path}: an image head (two_towers out_dim for the image) is "
                             "not a SigLIP layout mmjax imports")
    patch, _, channels, d = _shape(tensors, "img/embedding/kernel", path)
    where = "img/Transformer/encoderblock"
    scanned = _depth(tensors, "img/Transformer")[1]
    query = _shape(tensors, f"{where}{'' if scanned else '_0'}/MultiHeadDotProductAttention_0/"
                            "query/kernel", path)[-2]
    mlp = _shape(tensors, f"{where}{'' if scanned else '_0'}/MlpBlock_0/Dense_0/kernel",
                 path)[-1]
    patches = _shape(tensors, "img/pos_embedding", path)[1]
    text_width = _shape(tensors, "txt/Embed_0/embedding", path)[1]
    context = _shape(tensors, "txt/pos_embedding", path)[1]
    txt = "txt/Encoder_0/encoderblock"
    txt_scanned = _depth(tensors, "txt/Encoder_0")[1]
    txt_heads = _shape(tensors, f"{txt}{'' if txt_scanned else '_0'}/"
                                "MultiHeadDotProductAttention_0/query/kernel", path)[-2]
    txt_mlp = _shape(tensors, f"{txt}{'' if txt_scanned else '_0'}/MlpBlock_0/Dense_0/kernel",
                     path)[-1]
    if text_width != d:
        raise t.InteropError(f"{path}: text width {text_width} differs from the image width "
                             f"{d}; SigLIP's towers share one")
    vision = b.Tower(d, _depth(tensors, "img/Transformer")[0], query, mlp)
    text = b.Tower(text_width, _depth(tensors, "txt/Encoder_0")[0], txt_heads, txt_mlp)
    cfg: ModelConfig = siglip.model_config(vision, text, patch, context, "gelu_pytorch_tanh",
                                           1e-6, float(tensors.get("t", np.zeros(1))[0]))
    entries = [
        t.Entry("img/embedding/kernel", (*IMAGE, "patch_embed", "proj", "kernel"),
                (patch, patch, channels, d), lambda w: w.reshape(-1, w.shape[-1])),
        t.Entry("img/embedding/bias", (*IMAGE, "patch_embed", "proj", "bias"), (d,)),
        t.Entry("img/pos_embedding", (*IMAGE, "pos_embed", "pos"), (1, patches, d),
                lambda p: p[0]),
        t.Entry("img/MAPHead_0/probe", (*IMAGE, "map", "probe"), (1, 1, d)),
        *[e for e in _block("img/MAPHead_0", (*IMAGE, "map"), d, query, mlp, None)
          if "LayerNorm_1" not in e.name],
        t.Entry("txt/Embed_0/embedding", (*TEXT, "token_embed", "embedding"), (None, d)),
        t.Entry("txt/pos_embedding", (*TEXT, "pos_embed", "pos"), (1, context, d),
                lambda p: p[0]),
        t.Entry("txt/head/kernel", ("proj_report", "kernel"), (d, d)),
        t.Entry("txt/head/bias", ("proj_report", "bias"), (d,)),
        t.Entry("t", ("logit_scale",), (1,), lambda s: s.reshape(())),
        t.Entry("b", ("logit_bias",), (1,), lambda s: s.reshape(())),
        *_tower(tensors, "img", IMAGE, d, query, mlp),
        *_tower(tensors, "txt", TEXT, d, txt_heads, txt_mlp),
    ]
    entries = [_map_norm(e) for e in entries]
    params = t.assemble(tensors, entries, str(path))
    params["proj_image"] = {"kernel": np.eye(d, dtype=np.float32)}
    return b.Imported(cfg, params, str(path), int(round(patches ** 0.5)) * patch, channels,
                      context)


def _map_norm(entry: t.Entry) -> t.Entry:
    """The MAP head's LayerNorm_0 is MapPool's `ln` (in a block it is `ln_attn`)."""
    if entry.name.startswith("img/MAPHead_0/LayerNorm_0/"):
        return t.Entry(entry.name, (*IMAGE, "map", "ln", entry.path[-1]), entry.shape)
    return entry
