"""Tokenizers for every modality: 2-D image patches, 3-D video tubelets, 1-D signal
patches and text tokens, plus learned or fixed sin-cos positions."""

import einops
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmjax.nn.layers import constrain, dense, kernel_init


def _check_divisible(size: int, patch: int, what: str) -> None:
    if size % patch:
        raise ValueError(f"{what} {size} is not divisible by its patch size {patch}")


class PatchEmbed(nn.Module):
    """Cuts inputs into non-overlapping patches and projects each to `width`.

    `patch` has one entry per patched axis: (p,) for [B, N, C] signals, (p, q) for
    [B, H, W, C] images, (t, p, q) for [B, T, H, W, C] videos (tubelets).
    """

    patch: tuple[int, ...]
    width: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        axes = x.shape[1:-1]
        if len(axes) != len(self.patch):
            raise ValueError(f"patch {self.patch} does not fit inputs of shape {x.shape}")
        for size, p in zip(axes, self.patch, strict=True):
            _check_divisible(size, p, "input size")
        patches = patchify(x, self.patch)
        embedded = dense(self.width, "patch", "embed", self.dtype, self.param_dtype, "proj",
                         use_bias=self.use_bias)
        return constrain(embedded(patches), "batch", "length", "embed")


def patchify(x, patch: tuple[int, ...]):
    """[B, *sizes, C] -> [B, num_patches, prod(patch) * C]; also the MAE target layout."""
    names = [f"a{i}" for i in range(len(patch))]
    grid = " ".join(f"({n} p{i})" for i, n in enumerate(names))
    flat_grid = " ".join(names)
    flat_patch = " ".join(f"p{i}" for i in range(len(patch)))
    sizes = {f"p{i}": p for i, p in enumerate(patch)}
    return einops.rearrange(x, f"b {grid} c -> b ({flat_grid}) ({flat_patch} c)", **sizes)


def sincos_1d(length: int, width: int) -> np.ndarray:
    """Fixed sin-cos positions [length, width] (Vaswani et al.)."""
    if width % 2:
        raise ValueError(f"sin-cos positions need an even width, got {width}")
    position = np.arange(length)[:, None]
    frequency = 1.0 / 10000 ** (np.arange(width // 2) / (width // 2))
    angles = position * frequency[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


class PositionEmbed(nn.Module):
    """Adds positions to [B, L, D] tokens: learned (a table of `max_length` rows, the
    first L used) or fixed sin-cos.

    decode (learned only): x holds the next tokens of a sequence, whose position is
    counted in the 'cache' collection; the first call (on the full length) primes it.
    """

    kind: str = "learned"  # learned | sincos
    max_length: int = 0  # 0 = exactly the input length

    @nn.compact
    def __call__(self, x, decode: bool = False):
        _, length, width = x.shape
        rows = self.max_length or length
        if decode and self.has_variable("params", "pos"):  # a step is shorter than the table
            rows = nn.meta.unbox(self.get_variable("params", "pos")).shape[0]
        if length > rows:
            raise ValueError(f"{length} tokens exceed the {rows} positions of the table")
        if self.kind == "sincos":
            if decode:
                raise ValueError("decoding needs learned positions")
            return x + jnp.asarray(sincos_1d(length, width), x.dtype)[None]
        if self.kind != "learned":
            raise ValueError(f"unknown position embedding '{self.kind}'")
        table = self.param("pos", kernel_init("length", "embed", init=nn.initializers.normal(0.02)),
                           (rows, width), jnp.float32)
        if not decode:
            return x + table[None, :length].astype(x.dtype)
        primed = self.has_variable("cache", "cache_index")
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        start = index.value if primed else 0
        if primed:
            index.value = start + length
        return x + lax.dynamic_slice_in_dim(table, start, length)[None].astype(x.dtype)
