"""Modality encoders: each maps raw inputs to a token sequence and a pooled vector."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import TextConfig, ViTConfig
from mmjax.nn.embed import PatchEmbed, PositionEmbed
from mmjax.nn.transformer import Transformer


def pool_tokens(tokens, mask, how: str):
    """'cls' takes the first token; 'mean' averages tokens where mask is True."""
    if how == "cls":
        return tokens[:, 0]
    if how == "mean":
        weights = mask[..., None].astype(tokens.dtype)
        return (tokens * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    raise ValueError(f"unknown pooling '{how}' (expected 'cls' or 'mean')")


class ViTEncoder(nn.Module):
    """Vision transformer over [B, H, W, C] images with values in [0, 1]."""

    config: ViTConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        cfg = self.config
        x = PatchEmbed(cfg.patch_size, cfg.width, self.dtype, name="patch_embed")(images)
        if cfg.pool == "cls":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, cfg.width), jnp.float32)
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, cfg.width)), x], axis=1)
        x = PositionEmbed(name="pos_embed")(x)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, self.dtype, name="transformer")(x)
        mask = jnp.ones(x.shape[:2], bool)
        return pool_tokens(x, mask, cfg.pool), x


class TextEncoder(nn.Module):
    """Bidirectional transformer over token ids; padding (mask False) is never attended."""

    config: TextConfig
    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids, mask):
        cfg = self.config
        x = nn.Embed(self.vocab_size, cfg.width, dtype=self.dtype, name="token_embed")(token_ids)
        x = PositionEmbed(name="pos_embed")(x)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, self.dtype, name="transformer")(
            x, key_mask=mask
        )
        return pool_tokens(x, mask, cfg.pool), x
