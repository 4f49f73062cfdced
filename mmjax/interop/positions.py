"""Position embeddings for another image size, resampled the way the source library does
it, so a tower imported at 224 px runs at 448 (or 32) px as it would there: bicubic
(align_corners=False) over the patch grid, the CLS row kept as it is. transformers'
`interpolate_pos_encoding` samples 4 taps (a = -0.75, edges clamped); open_clip's
`resize_pos_embed` and timm's `resample_abs_pos_embed` filter with antialias (a = -0.5,
the kernel widened when shrinking, weights renormalised at the edges), as PIL does."""

import dataclasses
import math

import numpy as np

from mmjax.interop import blocks as b
from mmjax.interop import tensors as t


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_matrix(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
    """[out, in] weights of torch's F.interpolate(mode='bicubic', align_corners=False)."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        if antialias:
            support, stretch = 2.0 * max(scale, 1.0), min(1.0 / scale, 1.0)
            center = scale * (i + 0.5)
            taps = np.arange(max(int(center - support + 0.5), 0),
                             min(int(center + support + 0.5), size_in))
            w = _cubic((taps - center + 0.5) * stretch, -0.5)
            weights[i, taps] = w / w.sum()
        else:
            source = (i + 0.5) * scale - 0.5
            first = math.floor(source)
            frac = source - first
            for k, w in zip(range(-1, 3), _cubic(np.array([frac + 1, frac, 1 - frac,
                                                           2 - frac]), -0.75), strict=True):
                weights[i, min(max(first + k, 0), size_in - 1)] += w
    return weights


def resize_grid(grid: np.ndarray, size: int, antialias: bool) -> np.ndarray:
    """[g, g, D] position grid -> [size, size, D]."""
    m = resize_matrix(grid.shape[0], size, antialias)
    return np.einsum("ai,ijd,bj->abd", m, grid.astype(np.float64), m).astype(np.float32)


def at_image_size(imported: b.Imported, image_size: int, antialias: bool) -> b.Imported:
    """The import with its image position table resampled for `image_size` pixels."""
    patch = imported.model.image.patch_size
    if image_size % patch:
        raise t.InteropError(f"--image-size {image_size} is not a multiple of the patch size "
                             f"{patch}")
    if image_size == imported.image_size:
        return imported
    table = imported.params["encoders_image"]["pos_embed"]["pos"]
    cls = 1 if imported.model.image.cls_position else 0
    grid = imported.image_size // patch
    resized = resize_grid(table[cls:].reshape(grid, grid, -1), image_size // patch, antialias)
    table = np.concatenate([table[:cls], resized.reshape(-1, table.shape[-1])])
    image = {**imported.params["encoders_image"], "pos_embed": {"pos": table}}
    return dataclasses.replace(imported, params={**imported.params, "encoders_image": image},
                               image_size=image_size)
