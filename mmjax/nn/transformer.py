"""Transformer blocks shared by every encoder, fusion layer and decoder.

Pre-LayerNorm by default (stable to train from scratch); post-LayerNorm for BERT-family
weights. Blocks can be rematerialised to trade compute for activation memory.
"""

import dataclasses
import functools

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.attention import MultiHeadAttention
from mmjax.nn.layers import constrain, dense, layer_norm


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """How blocks are built; shared by all blocks of a stack."""

    norm: str = "pre"  # pre | post
    eps: float = 1e-6
    activation: str = "gelu_tanh"  # a key of ACTIVATIONS
    remat: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32


def quick_gelu(x):
    """OpenAI CLIP's sigmoid approximation of GELU, which its weights were trained with."""
    return x * nn.sigmoid(1.702 * x)


# The MLP nonlinearity by name: ViT and mmjax's own models use the tanh approximation,
# BERT the exact (erf) form, OpenAI CLIP its quick approximation.
ACTIVATIONS = {"gelu_tanh": functools.partial(nn.gelu, approximate=True),
               "gelu": functools.partial(nn.gelu, approximate=False),
               "quick_gelu": quick_gelu}


class MlpBlock(nn.Module):
    mlp_dim: int
    options: BlockOptions

    @nn.compact
    def __call__(self, x):
        o = self.options
        y = dense(self.mlp_dim, "embed", "mlp", o.dtype, o.param_dtype, "fc1")(x)
        y = constrain(ACTIVATIONS[o.activation](y), "batch", "length", "mlp")
        return dense(x.shape[-1], "mlp", "embed", o.dtype, o.param_dtype, "fc2")(y)


class EncoderBlock(nn.Module):
    """Self-attention (optionally causal), optional cross-attention to `context`, MLP."""

    num_heads: int
    mlp_dim: int
    options: BlockOptions
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, key_mask=None, context=None, context_mask=None, causal=False,
                 decode=False):
        o = self.options
        attend = MultiHeadAttention(self.num_heads, o.dtype, o.param_dtype, name="attn")
        x = self._residual(x, lambda y: attend(y, key_mask=key_mask, causal=causal,
                                               decode=decode), "ln_attn")
        if self.cross_attention:
            cross = MultiHeadAttention(self.num_heads, o.dtype, o.param_dtype, name="cross")
            x = self._residual(x, lambda y: cross(y, context, context_mask, decode=decode),
                               "ln_cross")
        mlp = MlpBlock(self.mlp_dim, o, name="mlp")
        return self._residual(x, mlp, "ln_mlp")

    def _residual(self, x, sublayer, norm_name):
        o = self.options
        norm = layer_norm(o.dtype, o.param_dtype, norm_name, o.eps)
        if o.norm == "pre":
            return x + sublayer(norm(x))
        if o.norm == "post":
            return norm(x + sublayer(x))
        raise ValueError(f"unknown norm position '{o.norm}' (expected 'pre' or 'post')")


class Transformer(nn.Module):
    """A stack of blocks; pre-norm stacks end with a final LayerNorm.

    decode: incremental decoding through the attention caches (see MultiHeadAttention).
    """

    depth: int
    num_heads: int
    mlp_dim: int
    options: BlockOptions = BlockOptions()
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, key_mask=None, context=None, context_mask=None, causal=False,
                 decode=False):
        # Remat only saves memory for a backward pass, which decoding does not have.
        block = nn.remat(EncoderBlock, static_argnums=(5, 6)) \
            if self.options.remat and not decode else EncoderBlock
        for i in range(self.depth):
            x = block(self.num_heads, self.mlp_dim, self.options, self.cross_attention,
                      name=f"block_{i}")(x, key_mask, context, context_mask, causal, decode)
        if self.options.norm == "pre":
            o = self.options
            x = layer_norm(o.dtype, o.param_dtype, "ln_final", o.eps)(x)
        return x
