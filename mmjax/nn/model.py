"""Two-tower image-text model: separate encoders projected into one shared space."""

import math

import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import ModelConfig
from mmjax.nn.encoders import TextEncoder, ViTEncoder


def l2_normalize(x, eps: float = 1e-6):
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class TwoTower(nn.Module):
    """CLIP-style towers. Returns unit-norm embeddings and the learned logit scale."""

    config: ModelConfig
    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.image_encoder = ViTEncoder(cfg.image, self.dtype)
        self.text_encoder = TextEncoder(cfg.text, self.vocab_size, self.dtype)
        self.image_proj = nn.Dense(cfg.embed_dim, use_bias=False, dtype=self.dtype)
        self.text_proj = nn.Dense(cfg.embed_dim, use_bias=False, dtype=self.dtype)
        # A float32 array initialiser: a Python-float init would be weak-typed and recompile.
        init_scale = jnp.asarray(math.log(1.0 / cfg.init_temperature), jnp.float32)
        self.logit_scale = self.param("logit_scale", lambda _: init_scale)

    def embed_image(self, images):
        pooled, _ = self.image_encoder(images)
        return l2_normalize(self.image_proj(pooled).astype(jnp.float32))

    def embed_text(self, token_ids, mask):
        pooled, _ = self.text_encoder(token_ids, mask)
        return l2_normalize(self.text_proj(pooled).astype(jnp.float32))

    def scale(self):
        """exp(logit_scale) clipped like CLIP, so the temperature cannot collapse."""
        return jnp.minimum(jnp.exp(self.logit_scale), self.config.max_logit_scale)

    def __call__(self, images, token_ids, mask):
        return self.embed_image(images), self.embed_text(token_ids, mask), self.scale()
