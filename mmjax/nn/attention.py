"""Multi-head attention as the textbook writes it, computed by jax.nn.dot_product_attention.

Q = X W_Q, K = C W_K, V = C W_V; A = softmax(Q K^T / sqrt(d_k)); O = A V, then W_O.
Self-attention is C = X; cross-modal attention takes Q from one modality and K, V from
another. The fused call lets XLA pick cuDNN/flash kernels on GPU.

Decoding one token at a time keeps keys and values in a 'cache' collection (as flax's
MultiHeadDotProductAttention does), so each step projects only the new token.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mmjax.nn.layers import constrain, dense


class MultiHeadAttention(nn.Module):
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, key_mask=None, causal: bool = False,
                 decode: bool = False):
        """x: [B, Lq, D] queries; context: [B, Lk, D] keys/values (default x);
        key_mask: [B, Lk] bool, True where a key may be attended to.

        decode: the first call primes the cache, at the full length for causal
        self-attention (empty slots) or with the context for cross-attention (its keys,
        values and mask, projected once); later calls take one token and no context.
        """
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads

        def project(name, inputs):
            layer = dense((self.num_heads, head_dim), "embed", ("heads", "kv"), self.dtype,
                          self.param_dtype, name)
            return constrain(layer(inputs), "batch", "length", "heads", "kv")

        q = project("query", x)
        primed = decode and self.has_variable("cache", "cached_key")
        if primed and not causal:
            k, v, mask = (self.get_variable("cache", name)
                          for name in ("cached_key", "cached_value", "cached_mask"))
        else:
            context = x if context is None else context
            k, v = project("key", context), project("value", context)
            mask = None if key_mask is None else key_mask[:, None, None, :]
        if decode and not primed:
            keep = jnp.zeros_like if causal else lambda a: a
            self.variable("cache", "cached_key", keep, k)
            self.variable("cache", "cached_value", keep, v)
            if causal:
                self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            else:
                self.variable("cache", "cached_mask", lambda: jnp.ones(
                    (k.shape[0], 1, 1, k.shape[1]), bool) if mask is None else mask)
        elif primed and causal:
            if x.shape[1] != 1:
                raise ValueError(f"a decoding step takes one token, got {x.shape[1]}")
            index = self.get_variable("cache", "cache_index")
            at = (0, index, 0, 0)
            k = lax.dynamic_update_slice(self.get_variable("cache", "cached_key"), k, at)
            v = lax.dynamic_update_slice(self.get_variable("cache", "cached_value"), v, at)
            for name, value in (("cached_key", k), ("cached_value", v), ("cache_index", index + 1)):
                self.put_variable("cache", name, value)
            # The new token's causal mask: the filled slots, up to and including its own.
            mask, causal = (jnp.arange(k.shape[1]) <= index)[None, None, None, :], False
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
        out = dense(width, ("heads", "kv"), "embed", self.dtype, self.param_dtype, "out",
                    axis=(-2, -1))(out)
        return constrain(out, "batch", "length", "embed")
