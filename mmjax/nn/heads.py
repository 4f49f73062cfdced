"""Task heads on a shared backbone."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.layers import dense, layer_norm


class ClassifierHead(nn.Module):
    """LayerNorm then a linear map: diagnosis (multi-label logits), risk (one logit),
    image-text matching (two logits)."""

    num_outputs: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = layer_norm(self.dtype, self.param_dtype, "ln")(x)
        out = dense(self.num_outputs, "embed", "classes", self.dtype, self.param_dtype, "out")
        return out(x).astype(jnp.float32)


class MlmHead(nn.Module):
    """Masked-language-model transform; the caller ties the output to the embeddings."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        x = dense(tokens.shape[-1], "embed", "embed", self.dtype, self.param_dtype,
                  "transform")(tokens)
        return layer_norm(self.dtype, self.param_dtype, "ln")(nn.gelu(x))
