"""Video as a sequence of frames: an image encoder on every frame (one set of weights),
then a temporal model (GRU, LSTM or transformer) over the frame embeddings.

Unlike tubelets, this reuses any image encoder (and its pretrained weights) and handles
clips of different lengths in one batch: shorter clips are padded at the end and
`frame_mask` [B, T] marks the real frames, which must be a prefix (True for t < length).
Padded frames never change the pooled output or the real frames' tokens.
"""

import inspect

import einops
import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import VideoConfig
from mmjax.nn.embed import PositionEmbed
from mmjax.nn.encoders import MapPool, pool_tokens
from mmjax.nn.layers import bias_init, constrain, dense, kernel_init
from mmjax.nn.transformer import BlockOptions, Transformer

RNN_CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
POOLS = {"gru": ("last", "mean", "map"), "lstm": ("last", "mean", "map"),
         "transformer": ("cls", "last", "mean", "map")}


def last_real(tokens, lengths):
    """tokens[b, lengths[b] - 1]: the last real frame (the first, zeroed, when none is real)."""
    index = jnp.maximum(lengths - 1, 0)
    return jnp.take_along_axis(tokens, index[:, None, None], axis=1)[:, 0]


class TemporalEncoder(nn.Module):
    """Frame features [B, T, F] + frame mask [B, T] -> (pooled [B, D], tokens [B, T, D],
    mask [B, T]).

    D is config.width; the transformer needs F == D (FrameVideoEncoder projects), the RNNs
    take any F. Tokens of padded frames are zero.
    """

    config: VideoConfig
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, features, frame_mask=None):
        cfg = self.config
        if cfg.temporal not in POOLS:
            raise ValueError(f"unknown temporal model '{cfg.temporal}' "
                             f"(expected one of {', '.join(POOLS)})")
        if cfg.pool not in POOLS[cfg.temporal]:
            raise ValueError(f"unknown pooling '{cfg.pool}' for temporal '{cfg.temporal}' "
                             f"(expected one of {', '.join(POOLS[cfg.temporal])})")
        if frame_mask is None:
            frame_mask = jnp.ones(features.shape[:2], bool)
        if cfg.temporal == "transformer":
            cls, tokens = self._transformer(features, frame_mask)
        else:
            cls, tokens = None, self._recurrent(features)
        tokens = constrain(jnp.where(frame_mask[..., None], tokens, 0),
                           "batch", "length", "embed")
        if cfg.pool == "cls":
            pooled = cls
        elif cfg.pool == "last":
            pooled = last_real(tokens, frame_mask.sum(1))
        elif cfg.pool == "map":
            pooled = MapPool(cfg.num_heads, self.options, name="map")(tokens, frame_mask)
        else:
            pooled = pool_tokens(tokens, frame_mask, "mean")
        return pooled, tokens, frame_mask

    def _recurrent(self, x):
        """`depth` stacked forward RNNs; per-frame outputs [B, T, width].

        A forward RNN's output at frame t depends only on frames <= t, so with the real
        frames a prefix, padding never reaches a real output and no seq_lengths is needed
        (nn.RNN uses it only to pick the final carry, which `last_real` reads from the
        outputs instead: h for the GRU and the LSTM alike).
        """
        cfg, o = self.config, self.options
        for i in range(cfg.depth):
            cell = RNN_CELLS[cfg.temporal](
                cfg.width, dtype=o.dtype, param_dtype=o.param_dtype,
                kernel_init=kernel_init("embed", "embed"),
                recurrent_kernel_init=kernel_init("embed", "embed",
                                                  init=nn.initializers.orthogonal()),
                bias_init=bias_init("embed"), name=f"rnn_{i}")
            x = nn.RNN(cell)(x)
        return x

    def _transformer(self, x, mask):
        """Learned frame positions, then self-attention that never attends to padding.

        Returns (the CLS token when pool is 'cls', else None) and the frame tokens.
        """
        cfg, o = self.config, self.options
        if x.shape[-1] != cfg.width:
            raise ValueError(f"the temporal transformer takes width {cfg.width} features, "
                             f"got {x.shape[-1]}")
        # A table of T rows of which a clip of L real frames uses the first L, as it would
        # alone: positions do not depend on how much padding follows.
        x = PositionEmbed("learned", name="pos_embed")(x)
        use_cls = cfg.pool == "cls"
        if use_cls:
            cls = self.param("cls", kernel_init(None, None, "embed", init=nn.initializers.zeros),
                             (1, 1, x.shape[-1]), jnp.float32)
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])).astype(
                x.dtype), x], axis=1)
            mask = jnp.concatenate([jnp.ones((x.shape[0], 1), bool), mask], axis=1)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, o, name="transformer")(
            x, key_mask=mask)
        return (x[:, 0], x[:, 1:]) if use_cls else (None, x)


def takes_valid(module: nn.Module) -> bool:
    """Whether `module` is called with valid= (BatchNorm CNNs keep padding out of statistics)."""
    return "valid" in inspect.signature(type(module).__call__).parameters


class FrameVideoEncoder(nn.Module):
    """Each frame of [B, T, H, W, C] through `frame_encoder` (one set of weights for every
    frame), its pooled output projected to video.width, then TemporalEncoder.

    frame_encoder: an unbound image encoder returning (pooled, tokens, mask), e.g.
    ViTEncoder. One that takes `valid` gets the frame mask, so that padded frames do not
    enter its BatchNorm statistics.
    """

    config: VideoConfig
    frame_encoder: nn.Module
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, video, frame_mask=None):
        """video [B, T, H, W, C]; frame_mask [B, T] bool (a prefix), None = all frames real."""
        cfg, o = self.config, self.options
        batch, frames = video.shape[:2]
        if frame_mask is None:
            frame_mask = jnp.ones((batch, frames), bool)
        # All frames in one call: a batch of B * T images through the shared weights.
        images = einops.rearrange(video, "b t h w c -> (b t) h w c")
        extra = {"valid": frame_mask.reshape(-1)} if takes_valid(self.frame_encoder) else {}
        pooled, _, _ = self.frame_encoder(images, **extra)
        x = einops.rearrange(pooled, "(b t) d -> b t d", b=batch)
        x = dense(cfg.width, "embed", "embed", o.dtype, o.param_dtype, "frame_proj")(x)
        return TemporalEncoder(cfg, o, name="temporal")(x, frame_mask)
