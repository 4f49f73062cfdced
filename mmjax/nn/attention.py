"""Multi-head attention as the textbook writes it, computed by jax.nn.dot_product_attention.

Q = X W_Q, K = C W_K, V = C W_V; A = softmax(Q K^T / sqrt(d_k)); O = A V, then W_O.
Self-attention is C = X; cross-modal attention takes Q from one modality and K, V from
another. The fused call lets XLA pick cuDNN/flash kernels on GPU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.layers import constrain, dense


class MultiHeadAttention(nn.Module):
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, key_mask=None, causal: bool = False):
        """x: [B, Lq, D] queries; context: [B, Lk, D] keys/values (default x);
        key_mask: [B, Lk] bool, True where a key may be attended to."""
        context = x if context is None else context
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads

        def project(name, inputs):
            layer = dense((self.num_heads, head_dim), "embed", ("heads", "kv"), self.dtype,
                          self.param_dtype, name)
            return constrain(layer(inputs), "batch", "length", "heads", "kv")

        q, k, v = project("query", x), project("key", context), project("value", context)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
        out = dense(width, ("heads", "kv"), "embed", self.dtype, self.param_dtype, "out",
                    axis=(-2, -1))(out)
        return constrain(out, "batch", "length", "embed")
