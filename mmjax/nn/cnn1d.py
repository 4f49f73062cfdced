"""xresnet1d: the 1-D ResNet family that leads the PTB-XL benchmark (Strodthoff et al.
2021), over multi-lead signals [B, N, leads]; the final feature map's positions are the
tokens fusion and the report decoder see.

fastai's xresnet (He et al. 2019, "Bag of Tricks"): a stem of three convolutions (the
first with stride 2) and a max pool, residual stages that after the first halve the
length and double the channels, shortcuts that average-pool before their 1x1 projection
(ResNet-D), each block's last norm starting at zero: cnn.py's ResNetBlock in one
dimension. BatchNorm follows cnn.py: the `batch_stats` collection's mutability says
training from evaluation.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import SignalCNNConfig
from mmjax.nn.cnn import ResNetBlock, conv, norm_layer
from mmjax.nn.encoders import pool_tokens
from mmjax.nn.layers import constrain
from mmjax.nn.transformer import BlockOptions


def downsampling(cfg: SignalCNNConfig) -> int:
    """Halvings of the length: the stem's stride, its max pool, one per later stage."""
    return 2 + len(cfg.stages) - 1


def token_count(cfg: SignalCNNConfig, samples: int) -> int:
    """The encoder's tokens for `samples` samples: every halving rounds up."""
    for _ in range(downsampling(cfg)):
        samples = -(-samples // 2)
    return samples


def output_channels(cfg: SignalCNNConfig) -> int:
    """Channels of the last stage (4x wider with bottleneck blocks)."""
    return cfg.width * 2 ** (len(cfg.stages) - 1) * (4 if cfg.bottleneck else 1)


class SignalCNNEncoder(nn.Module):
    """xresnet1d over [B, N, leads] signals; unrecorded leads (leads [B, leads] False)
    are zeroed, as the transformer encoder does.

    valid [B]: examples kept out of BatchNorm's statistics (an absent signal's zeros).
    Returns (pooled [B, C] or [B, 2C] with pool=concat, tokens [B, N', C], mask [B, N']).
    """

    config: SignalCNNConfig
    options: BlockOptions = BlockOptions()
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, signal, leads=None, valid=None):
        cfg, o = self.config, self.options
        if leads is not None:
            signal = signal * leads[:, None, :].astype(signal.dtype)
        norm = functools.partial(norm_layer, cfg, o, self.batch_axis)
        x = signal.astype(o.dtype)
        stem = (max(cfg.width // 2, 1), max(cfg.width // 2, 1), cfg.width)  # fastai 32, 32, 64
        for i, features in enumerate(stem):
            x = conv(features, cfg.kernel_size, 2 if i == 0 else 1, o, f"stem_conv{i}", 1)(x)
            x = nn.relu(norm(features, f"stem_norm{i}")(x, valid))
        x = nn.max_pool(x, (3,), (2,), padding=((1, 1),))
        block = nn.remat(ResNetBlock) if o.remat else ResNetBlock
        for i, depth in enumerate(cfg.stages):
            for j in range(depth):
                x = block(cfg.width * 2**i, 2 if i > 0 and j == 0 else 1, cfg, o,
                          self.batch_axis, cfg.kernel_size, dims=1, avg_down=True,
                          name=f"stage{i}_block{j}")(x, valid)
            x = constrain(x, "batch", "length", "embed")
        mask = jnp.ones(x.shape[:2], bool)
        if cfg.pool == "concat":  # fastai's AdaptiveConcatPool1d: [mean, max] over time
            pooled = jnp.concatenate([pool_tokens(x, mask, "mean"), x.max(axis=1)], -1)
        else:
            pooled = pool_tokens(x, mask, "mean")
        return pooled, x, mask
