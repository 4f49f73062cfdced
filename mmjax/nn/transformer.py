"""Pre-LayerNorm transformer blocks shared by every encoder."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.attention import MultiHeadAttention


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x)
        return nn.Dense(width, dtype=self.dtype, name="fc2")(x)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask=None, causal: bool = False):
        y = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
        x = x + MultiHeadAttention(self.num_heads, self.dtype, name="attn")(
            y, key_mask=key_mask, causal=causal
        )
        y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
        return x + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(y)


class Transformer(nn.Module):
    """A stack of encoder blocks followed by a final LayerNorm."""

    depth: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask=None, causal: bool = False):
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, name=f"block_{i}")(
                x, key_mask, causal
            )
        return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
