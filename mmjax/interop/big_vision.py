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
IMAGE_TOWER, TEXT_TOWER = "img/Transformer", "txt/Encoder_0"  # where their blocks live


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


BLOCK_NORMS = {"LayerNorm_0": "ln_attn", "LayerNorm_1": "ln_mlp"}
MAP_NORMS = {"LayerNorm_0": "ln"}  # MapPool's one LayerNorm, before its MLP


def _block(source: str, dst: tuple[str, ...], size: b.Tower, layer: int | None,
           norms: dict = BLOCK_NORMS) -> list[t.Entry]:
    """A flax encoder block (or MAP head: its attention, LayerNorm and MLP) at `source`;
    `layer`: its index along a scanned stack's first axis."""
    def entry(name: str, path: tuple[str, ...], shape: tuple[int, ...]) -> t.Entry:
        if layer is None:
            return t.Entry(f"{source}/{name}", path, shape)
        return t.Entry(f"{source}/{name}", path, (None, *shape), lambda w, i=layer: w[i])

    d, heads, mlp = size.width, size.heads, size.mlp
    k = d // heads
    entries = []
    for norm, where in norms.items():
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


def _tower_size(tensors: dict, tower: str, width: int, where) -> tuple[b.Tower, bool]:
    """(sizes, scanned) of a tower, read from its first block's tensors."""
    depth, scanned = _depth(tensors, tower)
    first = f"{tower}/encoderblock{'' if scanned else '_0'}"
    heads = _shape(tensors, f"{first}/MultiHeadDotProductAttention_0/query/kernel", where)[-2]
    mlp = _shape(tensors, f"{first}/MlpBlock_0/Dense_0/kernel", where)[-1]
    return b.Tower(width, depth, heads, mlp), scanned


def _tower(tower: str, path: tuple[str, ...], size: b.Tower, scanned: bool) -> list[t.Entry]:
    entries = []
    for i in range(size.depth):
        source = f"{tower}/encoderblock" if scanned else f"{tower}/encoderblock_{i}"
        entries += _block(source, (*path, "transformer", f"block_{i}"), size,
                          i if scanned else None)
    final = (*path, "transformer", "ln_final")
    return entries + [t.Entry(f"{tower}/encoder_norm/scale", (*final, "scale"), (size.width,)),
                      t.Entry(f"{tower}/encoder_norm/bias", (*final, "bias"), (size.width,))]


def from_npz(path: str | Path) -> b.Imported:
    """A big_vision SigLIP `.npz` (e.g. webli_en_b16_224_*.npz)."""
    tensors = read_npz(path)
    if "img/head/kernel" in tensors:
        raise t.InteropError(f"{path}: an image head (two_towers out_dim for the image) is "
                             "not a SigLIP layout mmjax imports")
    patch, _, channels, d = _shape(tensors, "img/embedding/kernel", path)
    patches = _shape(tensors, "img/pos_embedding", path)[1]
    text_width = _shape(tensors, "txt/Embed_0/embedding", path)[1]
    context = _shape(tensors, "txt/pos_embedding", path)[1]
    if text_width != d:
        raise t.InteropError(f"{path}: text width {text_width} differs from the image width "
                             f"{d}; SigLIP's towers share one")
    vision, vision_scanned = _tower_size(tensors, IMAGE_TOWER, d, path)
    text, text_scanned = _tower_size(tensors, TEXT_TOWER, d, path)
    cfg: ModelConfig = siglip.model_config(vision, text, patch, context, "gelu_pytorch_tanh",
                                           1e-6, float(tensors.get("t", np.zeros(1))[0]))
    entries = [
        t.Entry("img/embedding/kernel", (*IMAGE, "patch_embed", "proj", "kernel"),
                (patch, patch, channels, d), lambda w: w.reshape(-1, w.shape[-1])),
        t.Entry("img/embedding/bias", (*IMAGE, "patch_embed", "proj", "bias"), (d,)),
        t.Entry("img/pos_embedding", (*IMAGE, "pos_embed", "pos"), (1, patches, d),
                lambda p: p[0]),
        t.Entry("img/MAPHead_0/probe", (*IMAGE, "map", "probe"), (1, 1, d)),
        *_block("img/MAPHead_0", (*IMAGE, "map"), vision, None, MAP_NORMS),
        t.Entry("txt/Embed_0/embedding", (*TEXT, "token_embed", "embedding"), (None, d)),
        t.Entry("txt/pos_embedding", (*TEXT, "pos_embed", "pos"), (1, context, d),
                lambda p: p[0]),
        t.Entry("txt/head/kernel", ("proj_report", "kernel"), (d, d)),
        t.Entry("txt/head/bias", ("proj_report", "bias"), (d,)),
        t.Entry("t", ("logit_scale",), (1,), lambda s: s.reshape(())),
        t.Entry("b", ("logit_bias",), (1,), lambda s: s.reshape(())),
        *_tower(IMAGE_TOWER, IMAGE, vision, vision_scanned),
        *_tower(TEXT_TOWER, TEXT, text, text_scanned),
    ]
    params = t.assemble(tensors, entries, str(path))
    params["proj_image"] = {"kernel": np.eye(d, dtype=np.float32)}
    return b.Imported(cfg, params, str(path), int(round(patches ** 0.5)) * patch, channels,
                      context)
