"""ResNet and VGG image encoders; the final feature map's positions are the tokens.

Training or evaluation follows whether the `batch_stats` collection is mutable:
`apply(..., mutable=["batch_stats"])` normalises with the batch's statistics and updates
the running averages, a plain `apply` normalises with the running averages. Convolution
kernels and norms name their output channels `embed`, so FSDP splits them as it splits a
transformer's model dimension.
"""

import functools
import math
from collections.abc import Callable

import einops
import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from mmjax.config import CNNConfig, SignalCNNConfig
from mmjax.nn.encoders import MapPool, pool_tokens
from mmjax.nn.layers import bias_init, constrain, kernel_init
from mmjax.nn.transformer import BlockOptions

KINDS = ("resnet", "vgg")
NORMS = ("group", "batch")
STEMS = ("small", "imagenet")
POOLS = ("mean", "map")

# He et al. (2015) for ReLU networks, as torchvision initialises ResNet and VGG.
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _check(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        expected = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
        raise ValueError(f"unknown CNN {what} '{value}' (expected {expected})")


class BatchNorm(nn.Module):
    """BatchNorm over the valid examples of the global batch, under jit or pmap.

    flax's nn.BatchNorm(mask=...) averages each device's masked mean over `axis_name`,
    which weighs devices alike whatever their valid counts and is NaN wherever a device
    (or the whole batch) has none. Here sums and counts are reduced instead, in one psum,
    and a batch without valid examples leaves the running averages as they were. Under
    jit the sums span the sharded batch by themselves: XLA inserts the reduction.
    """

    momentum: float
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros
    epsilon: float = 1e-5  # PyTorch's, so converted torchvision weights normalise alike

    @nn.compact
    def __call__(self, x, valid=None):
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        x = x.astype(jnp.float32)
        mean, var = ra_mean.value, ra_var.value
        if self.is_mutable_collection("batch_stats"):
            weight = jnp.ones(x.shape[0]) if valid is None else valid.astype(jnp.float32)
            weight = weight.reshape(-1, *[1] * (x.ndim - 1))
            axes = tuple(range(x.ndim - 1))
            count = weight.sum() * math.prod(x.shape[1:-1])
            sums = jnp.stack([(weight * x).sum(axes), (weight * x * x).sum(axes),
                              jnp.broadcast_to(count, (features,))])
            # Init may run outside pmap, where the axis does not exist (flax does the same).
            if self.axis_name is not None and not self.is_initializing():
                sums = lax.psum(sums, self.axis_name)
            seen = sums[2] > 0
            batch_mean = sums[0] / jnp.maximum(sums[2], 1.0)
            batch_var = jnp.maximum(sums[1] / jnp.maximum(sums[2], 1.0) - batch_mean**2, 0.0)
            mean = jnp.where(seen, batch_mean, mean)
            var = jnp.where(seen, batch_var, var)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
        y = (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)


def _groups(channels: int, most: int) -> int:
    """The most GroupNorm groups, up to `most`, that divide `channels`."""
    return max(g for g in range(1, min(most, channels) + 1) if channels % g == 0)


def conv(features: int, size: int, strides: int, options: BlockOptions, name: str,
         dims: int = 2):
    """A bias-free convolution (a norm follows) over `dims` spatial axes, with PyTorch's
    symmetric padding."""
    return nn.Conv(features, (size,) * dims, (strides,) * dims,
                   padding=[(size // 2,) * 2] * dims,
                   use_bias=False, dtype=options.dtype, param_dtype=options.param_dtype,
                   kernel_init=kernel_init(None, None, None, "embed", init=HE_NORMAL),
                   name=name)


def norm_layer(cfg: CNNConfig | SignalCNNConfig, options: BlockOptions,
               batch_axis: str | None, channels: int, name: str, zero_scale: bool = False):
    """(x, valid) -> x: GroupNorm (per example, so `valid` is moot) or BatchNorm."""
    init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    common = dict(dtype=options.dtype, param_dtype=options.param_dtype,
                  scale_init=kernel_init("embed", init=init), bias_init=bias_init("embed"),
                  name=name)
    if cfg.norm == "batch":
        return BatchNorm(cfg.batch_norm_momentum, batch_axis, **common)
    norm = nn.GroupNorm(_groups(channels, cfg.norm_groups), **common)
    return lambda x, valid: norm(x)


def _halve(x):
    """Average pool by 2 over every spatial axis, rounding up like PyTorch's ceil_mode."""
    dims = x.ndim - 2
    return nn.avg_pool(x, (2,) * dims, (2,) * dims, count_include_pad=False,
                       padding=[(0, n % 2) for n in x.shape[1:-1]])


class ResNetBlock(nn.Module):
    """Basic (k, k) or bottleneck (1, k, 1 to 4x channels) residual block over `dims`
    spatial axes; k = 3 for images.

    The stride sits on the k-wide convolution (ResNet v1.5). The last norm's scale starts
    at zero, so each block starts as the identity (Goyal et al. 2017). Where the shape
    changes the shortcut is a strided 1x1 projection, or with `avg_down` an average pool
    then a 1x1 projection (ResNet-D, as fastai's xresnet).
    """

    channels: int
    strides: int
    config: CNNConfig | SignalCNNConfig
    options: BlockOptions
    batch_axis: str | None = None
    kernel_size: int = 3
    dims: int = 2
    avg_down: bool = False

    @nn.compact
    def __call__(self, x, valid=None):
        cfg, o, c, s, k = self.config, self.options, self.channels, self.strides, \
            self.kernel_size
        norm = functools.partial(norm_layer, cfg, o, self.batch_axis)
        bottleneck = [(c, 1, 1), (c, k, s), (4 * c, 1, 1)]  # (features, size, strides)
        layers = bottleneck if cfg.bottleneck else [(c, k, s), (c, k, 1)]
        y = x
        for i, (features, size, strides) in enumerate(layers, 1):
            last = i == len(layers)
            y = conv(features, size, strides, o, f"conv{i}", self.dims)(y)
            y = norm(features, f"norm{i}", zero_scale=last)(y, valid)
            y = y if last else nn.relu(y)
        if self.avg_down and s != 1:
            x, s = _halve(x), 1
        if s != 1 or x.shape[-1] != y.shape[-1]:
            x = conv(y.shape[-1], 1, s, o, "proj_conv", self.dims)(x)
            x = norm(y.shape[-1], "proj_norm")(x, valid)
        return nn.relu(x + y)


class VGGStage(nn.Module):
    """`depth` 3x3 convolutions, each followed by a norm and ReLU."""

    depth: int
    channels: int
    config: CNNConfig
    options: BlockOptions
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, x, valid=None):
        for i in range(self.depth):
            x = conv(self.channels, 3, 1, self.options, f"conv{i}")(x)
            x = norm_layer(self.config, self.options, self.batch_axis, self.channels,
                           f"norm{i}")(x, valid)
            x = nn.relu(x)
        return x


class CNNEncoder(nn.Module):
    """ResNet or VGG over [B, H, W, C] images (any channel count).

    Stage i has width * 2**i channels (ResNet bottleneck outputs 4x that; VGG stops
    doubling at width * 8, its 512 = 64 * 8). ResNet stages after the first start with
    a stride-2 block; VGG max-pools between stages but not after the last, so small
    images keep a feature map. VGG has no stem (its full-resolution first stage is one):
    config.stem only applies to ResNet.

    valid [B]: examples left out of BatchNorm's statistics (an absent modality's zeros,
    padded video frames); they are still encoded. batch_axis: the pmap axis BatchNorm
    averages its statistics over; under jit they are global already.

    Returns (pooled [B, C], tokens [B, h * w, C] row-major, token mask [B, h * w]).
    """

    config: CNNConfig
    kind: str
    options: BlockOptions = BlockOptions()
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, images, valid=None):
        cfg = self.config
        _check("kind", self.kind, KINDS)
        _check("norm", cfg.norm, NORMS)
        _check("pool", cfg.pool, POOLS)
        x = self._resnet(images, valid) if self.kind == "resnet" else self._vgg(images, valid)
        tokens = constrain(einops.rearrange(x, "b h w c -> b (h w) c"), "batch", "length",
                           "embed")
        mask = jnp.ones(tokens.shape[:2], bool)
        if cfg.pool == "map":
            heads = next(h for h in (8, 4, 2, 1) if tokens.shape[-1] % h == 0)
            return MapPool(heads, self.options, name="map")(tokens, mask), tokens, mask
        return pool_tokens(tokens, mask, cfg.pool), tokens, mask

    def _resnet(self, x, valid):
        cfg, o = self.config, self.options
        _check("stem", cfg.stem, STEMS)
        imagenet = cfg.stem == "imagenet"
        x = conv(cfg.width, 7 if imagenet else 3, 2 if imagenet else 1, o, "stem_conv")(x)
        x = nn.relu(norm_layer(cfg, o, self.batch_axis, cfg.width, "stem_norm")(x, valid))
        if imagenet:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        block = nn.remat(ResNetBlock) if o.remat else ResNetBlock
        for i, depth in enumerate(cfg.stages):
            for j in range(depth):
                strides = 2 if i > 0 and j == 0 else 1
                x = block(cfg.width * 2**i, strides, cfg, o, self.batch_axis,
                          name=f"stage{i}_block{j}")(x, valid)
            x = constrain(x, "batch", None, None, "embed")
        return x

    def _vgg(self, x, valid):
        cfg, o = self.config, self.options
        stage = nn.remat(VGGStage) if o.remat else VGGStage
        for i, depth in enumerate(cfg.stages):
            if i > 0:
                x = nn.max_pool(x, (2, 2), (2, 2))
            x = stage(depth, cfg.width * 2 ** min(i, 3), cfg, o, self.batch_axis,
                      name=f"stage{i}")(x, valid)
            x = constrain(x, "batch", None, None, "embed")
        return x
