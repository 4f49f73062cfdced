"""Modality encoders. Each returns (pooled [B, D], tokens [B, L, D], token mask [B, L])."""

import dataclasses

import einops
import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import SignalConfig, TextConfig, VideoConfig, ViTConfig
from mmjax.nn.attention import MultiHeadAttention
from mmjax.nn.embed import PatchEmbed, PositionEmbed
from mmjax.nn.layers import constrain, kernel_init, layer_norm
from mmjax.nn.transformer import BlockOptions, MlpBlock, Transformer


def pool_tokens(tokens, mask, how: str):
    """'cls' takes the first token; 'mean' averages the tokens where mask is True; 'last'
    takes the last token where it is True (the mask marks a prefix)."""
    if how == "cls":
        return tokens[:, 0]
    if how == "last":
        last = jnp.maximum(mask.sum(axis=1) - 1, 0)
        return jnp.take_along_axis(tokens, last[:, None, None], axis=1)[:, 0]
    if how == "mean":
        weights = mask[..., None].astype(tokens.dtype)
        return (tokens * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    raise ValueError(f"unknown pooling '{how}' (expected 'cls', 'mean', 'last' or 'map')")


class MapPool(nn.Module):
    """Multihead attention pooling: a learned probe attends over the tokens; with
    `mlp_dim`, then a residual LayerNorm + MLP on it (big_vision's and SigLIP's MAP head)."""

    num_heads: int
    options: BlockOptions
    mlp_dim: int = 0

    @nn.compact
    def __call__(self, tokens, mask):
        probe = self.param("probe", kernel_init(None, None, "embed",
                                                init=nn.initializers.normal(0.02)),
                           (1, 1, tokens.shape[-1]), jnp.float32)
        probe = jnp.broadcast_to(probe, (tokens.shape[0], 1, tokens.shape[-1])).astype(
            tokens.dtype)
        o = self.options
        pooled = MultiHeadAttention(self.num_heads, o.dtype, o.param_dtype, name="attn")(
            probe, tokens, mask)
        if self.mlp_dim:
            normed = layer_norm(o.dtype, o.param_dtype, "ln", o.eps)(pooled)
            pooled = pooled + MlpBlock(self.mlp_dim, o, name="mlp")(normed)
        return pooled[:, 0]


def keep_tokens(x, keep):
    """The tokens at positions `keep` [B, K] of x [B, L, ...] (MAE's visible subset)."""
    return jnp.take_along_axis(x, keep.reshape(*keep.shape, *([1] * (x.ndim - 2))), axis=1)


class _TokenEncoder(nn.Module):
    """Shared tail: positions, optional visible subset, optional CLS, transformer, pooling.

    Returned tokens are the patch tokens (the CLS token, if any, is only pooled), in
    the order of `keep` when given.
    """

    def encode(self, x, cfg, options: BlockOptions, positions="learned", keep=None, mask=None,
               cls_position=False, pre_norm=False, map_mlp=False):
        """`mask` [B, L] marks real tokens (padding of shorter inputs is never attended to).
        `cls_position`: the CLS token has a row of the position table (the first), as in
        CLIP and timm; `pre_norm`: a LayerNorm ('ln_pre') before the blocks (CLIP);
        `map_mlp`: pool=map with big_vision's LayerNorm + MLP after the probe (SigLIP)."""
        use_cls = cfg.pool == "cls"
        if use_cls:
            cls = self.param("cls", kernel_init(None, None, "embed", init=nn.initializers.zeros),
                             (1, 1, x.shape[-1]), jnp.float32)
            cls = jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
        if cls_position:
            if not use_cls:
                raise ValueError("cls_position needs pool='cls'")
            x = PositionEmbed(positions, name="pos_embed")(jnp.concatenate([cls, x], axis=1))
            cls, x = x[:, :1], x[:, 1:]
        else:
            x = PositionEmbed(positions, name="pos_embed")(x)
        padded = mask is not None
        mask = mask if padded else jnp.ones(x.shape[:2], bool)
        if keep is not None:
            x, mask = keep_tokens(x, keep), keep_tokens(mask, keep)
        key_mask = mask if padded else None
        if use_cls:
            x = jnp.concatenate([cls, x], axis=1)
            if padded:
                key_mask = jnp.concatenate([jnp.ones((x.shape[0], 1), bool), mask], axis=1)
        if pre_norm:
            x = layer_norm(options.dtype, options.param_dtype, "ln_pre", options.eps)(x)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, options, name="transformer")(
            x, key_mask=key_mask)
        x = constrain(x, "batch", "length", "embed")
        if use_cls:
            return x[:, 0], x[:, 1:], mask
        if cfg.pool == "map":
            mlp_dim = cfg.mlp_dim if map_mlp else 0
            return MapPool(cfg.num_heads, options, mlp_dim, name="map")(x, mask), x, mask
        return pool_tokens(x, mask, cfg.pool), x, mask


class ViTEncoder(_TokenEncoder):
    """Vision transformer over [B, H, W, C] images (any channel count)."""

    config: ViTConfig
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, images, keep=None):
        cfg = self.config
        o = dataclasses.replace(self.options, eps=cfg.layer_norm_eps, activation=cfg.activation)
        patch = (cfg.patch_size, cfg.patch_size)
        x = PatchEmbed(patch, cfg.width, o.dtype, o.param_dtype, cfg.patch_bias,
                       name="patch_embed")(images)
        return self.encode(x, cfg, o, cfg.positions, keep, cls_position=cfg.cls_position,
                           pre_norm=cfg.pre_norm, map_mlp=cfg.map_mlp)


class TextEncoder(_TokenEncoder):
    """Transformer over token ids; padding (mask False) is never attended to.

    `causal` makes it a left-to-right decoder-style encoder; BERT options (post-norm,
    embedding LayerNorm, token types) let pretrained BERT-family weights load.
    """

    config: TextConfig
    vocab_size: int
    options: BlockOptions = BlockOptions()

    def setup(self):
        cfg = self.config
        o = dataclasses.replace(self.options, norm=cfg.norm, eps=cfg.layer_norm_eps,
                                activation=cfg.activation)
        self.token_embed = nn.Embed(
            self.vocab_size, cfg.width, dtype=o.dtype, param_dtype=o.param_dtype,
            embedding_init=kernel_init("vocab", "embed", init=nn.initializers.normal(0.02)),
        )
        self.pos_embed = PositionEmbed("learned", cfg.max_positions)
        if cfg.type_vocab_size:
            self.type_embed = nn.Embed(cfg.type_vocab_size, cfg.width, dtype=o.dtype,
                                       param_dtype=o.param_dtype)
        if cfg.embed_norm:
            self.embed_ln = layer_norm(o.dtype, o.param_dtype, "embed_ln", cfg.layer_norm_eps)
        self.transformer = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, o)

    def __call__(self, token_ids, mask):
        cfg = self.config
        if cfg.attend_padding:  # SigLIP: padding is attended and the last position pooled
            mask = jnp.ones_like(mask)
        x = self.pos_embed(self.token_embed(token_ids))
        if cfg.type_vocab_size:
            x = x + self.type_embed(jnp.zeros_like(token_ids))
        if cfg.embed_norm:
            x = self.embed_ln(x)
        x = self.transformer(x, key_mask=mask, causal=cfg.causal)
        x = constrain(x, "batch", "length", "embed")
        return pool_tokens(x, mask, cfg.pool), x, mask

    def logits(self, tokens):
        """Vocabulary logits from tokens, with the embedding matrix tied (MLM, decoding)."""
        return self.token_embed.attend(tokens)


class VideoEncoder(_TokenEncoder):
    """Tubelets of [B, T, H, W, C] clips; joint space-time or factorised attention.

    `frame_mask` [B, T] marks real frames (a prefix); tubes that start on padding are
    never attended to nor pooled.
    """

    config: VideoConfig
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, video, frame_mask=None, keep=None):
        cfg, o = self.config, self.options
        patch = (cfg.tubelet_frames, cfg.patch_size, cfg.patch_size)
        x = PatchEmbed(patch, cfg.width, o.dtype, o.param_dtype, name="tubelet_embed")(video)
        times = video.shape[1] // cfg.tubelet_frames
        real_times = None if frame_mask is None else frame_mask[:, ::cfg.tubelet_frames]
        mask = None if real_times is None else einops.repeat(
            real_times, "b t -> b (t s)", s=x.shape[1] // times)
        if cfg.attention == "joint":
            return self.encode(x, cfg, o, keep=keep, mask=mask)
        if cfg.attention != "factorised":
            raise ValueError(f"unknown video attention '{cfg.attention}'")
        if keep is not None:
            raise ValueError("masked (MAE) video needs joint attention: a factorised grid "
                             "cannot drop tubes")
        batch = video.shape[0]
        # Spatial attention within each time step, then temporal attention per position.
        x = einops.rearrange(x, "b (t s) d -> (b t) s d", t=times)
        space = x.shape[1]
        x = PositionEmbed(name="space_pos")(x)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, o, name="spatial")(x)
        x = einops.rearrange(x, "(b t) s d -> (b s) t d", b=batch)
        x = PositionEmbed(name="time_pos")(x)
        time_mask = None if real_times is None else einops.repeat(
            real_times, "b t -> (b s) t", s=space)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, o, name="temporal")(
            x, key_mask=time_mask)
        x = einops.rearrange(x, "(b s) t d -> b (t s) d", b=batch)
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        return pool_tokens(x, mask, cfg.pool), x, mask


class SignalEncoder(_TokenEncoder):
    """1-D patches over multi-lead signals [B, N, leads]; unrecorded leads are zeroed."""

    config: SignalConfig
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, signal, leads=None, keep=None):
        cfg, o = self.config, self.options
        if leads is not None:
            signal = signal * leads[:, None, :].astype(signal.dtype)
        x = PatchEmbed((cfg.patch_size,), cfg.width, o.dtype, o.param_dtype,
                       name="patch_embed")(signal)
        return self.encode(x, cfg, o, keep=keep)
