"""Fusion of modality encoders, chosen by config: late, early, hybrid or bottleneck.

  late:       embeddings ──mean over present──▶ fused
  early:      [cls, tokens_1, ..., tokens_M] ──transformer──▶ cls
  hybrid:     tokens_m ──co-attention to the other modalities (both/all ways)──▶ pool, mean
  bottleneck: [tokens_m, z] ──block_m──▶ z_m; z = mean_m z_m per layer ──▶ mean of z (MBT)

Absent modalities are masked out (excluded from means, never attended to), so the
fused result does not depend on the zero-filled placeholders of missing inputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.config import FusionConfig
from mmjax.nn.encoders import pool_tokens
from mmjax.nn.layers import constrain, dense, kernel_init, layer_norm
from mmjax.nn.transformer import BlockOptions, EncoderBlock, MlpBlock, Transformer

KINDS = ("late", "early", "hybrid", "bottleneck")


def masked_mean(embeddings: dict, present: dict):
    """Mean over the modalities present in each example; zeros where none is."""
    stacked = jnp.stack([embeddings[m] for m in embeddings], axis=1)  # [B, M, E]
    return pool_tokens(stacked, jnp.stack([present[m] for m in embeddings], axis=1), "mean")


class CoAttention(nn.Module):
    """Each modality's queries attend to the keys and values of all the other modalities.

    Q^m = X^m W_Q^m and, for every other modality n, K^n = X^n W_K^n, V^n = X^n W_V^n,
    concatenated over n; O^m = softmax(Q^m K^T / sqrt(d_k)) V W_O^m. Returns every
    modality's update; zero where an example has no other modality's key to attend to.
    """

    num_heads: int
    modalities: tuple[str, ...]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: dict, masks: dict):
        """tokens[m]: [B, N_m, D]; masks[m]: [B, N_m] bool, True where a key may be attended."""
        width = tokens[self.modalities[0]].shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads

        def project(name):
            return {m: constrain(dense((self.num_heads, head_dim), "embed", ("heads", "kv"),
                                       self.dtype, self.param_dtype, f"{name}_{m}")(tokens[m]),
                                 "batch", "length", "heads", "kv")
                    for m in self.modalities}

        q, k, v = project("query"), project("key"), project("value")
        updates = {}
        for m in self.modalities:
            others = [n for n in self.modalities if n != m]
            mask = jnp.concatenate([masks[n] for n in others], axis=1)
            out = jax.nn.dot_product_attention(
                q[m], jnp.concatenate([k[n] for n in others], 1),
                jnp.concatenate([v[n] for n in others], 1), mask=mask[:, None, None, :])
            out = dense(width, ("heads", "kv"), "embed", self.dtype, self.param_dtype,
                        f"out_{m}", axis=(-2, -1))(out)
            # Softmax over no key at all is undefined: such rows get no update.
            updates[m] = constrain(jnp.where(mask.any(1)[:, None, None], out, 0),
                                   "batch", "length", "embed")
        return updates


class CoAttentionBlock(nn.Module):
    """One hybrid layer: per-modality pre-LN co-attention and pre-LN MLP, both residual.

    Every modality updates at once from the previous layer's states.
    """

    num_heads: int
    mlp_dim: int
    modalities: tuple[str, ...]
    options: BlockOptions

    @nn.compact
    def __call__(self, tokens: dict, masks: dict):
        o = self.options
        normed = {m: layer_norm(o.dtype, o.param_dtype, f"ln_attn_{m}", o.eps)(tokens[m])
                  for m in self.modalities}
        updates = CoAttention(self.num_heads, self.modalities, o.dtype, o.param_dtype,
                              name="attn")(normed, masks)
        out = {}
        for m in self.modalities:
            x = tokens[m] + updates[m]
            y = layer_norm(o.dtype, o.param_dtype, f"ln_mlp_{m}", o.eps)(x)
            out[m] = x + MlpBlock(self.mlp_dim, o, name=f"mlp_{m}")(y)
        return out


class Fusion(nn.Module):
    """Combines encoder outputs into one vector per example.

    late: the mean of the projected embeddings of the present modalities.
    early: one transformer over every present modality's tokens, with modality-type
      embeddings and a CLS token that is pooled.
    hybrid: `depth` co-attention layers (CoAttentionBlock): every modality's tokens attend
      to all the others' and all are updated; each is then mean-pooled, and the pooled
      vectors averaged over the present modalities. Needs two or more modalities.
    bottleneck: MBT (Nagrani et al. 2021): per layer, each modality's own block runs over
      its tokens and `bottleneck_tokens` shared tokens z, and z becomes the mean of the
      modalities' copies; the final z is mean-pooled. Only z crosses modalities.

    Decision fusion (per-modality heads combined) lives in the model, not here.
    """

    config: FusionConfig
    modalities: tuple[str, ...]
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, encoded: dict, embeddings: dict, present: dict):
        kind = self.config.kind
        if kind == "late":
            return masked_mean(embeddings, present)
        if kind == "decision":
            raise ValueError("decision fusion combines per-modality head outputs in the model, "
                             "not in Fusion")
        if kind not in KINDS:
            raise ValueError(f"unknown fusion '{kind}'; choose from {KINDS}")
        if kind == "hybrid" and len(self.modalities) < 2:
            raise ValueError(f"hybrid fusion needs two or more modalities, got {self.modalities}")
        init = kernel_init(None, "embed", init=nn.initializers.normal(0.02))
        types = self.param("type_embed", init, (len(self.modalities), self.config.width),
                           jnp.float32)
        tokens, masks = self._tokens(encoded, present, types)
        if kind == "early":
            return self._early(tokens, masks)
        if kind == "hybrid":
            return self._hybrid(tokens, masks, present)
        return self._bottleneck(tokens, masks, present)

    def _tokens(self, encoded, present, types):
        """Every modality's tokens at the fusion width plus its type embedding, and their
        masks (False where padded or absent)."""
        cfg, o = self.config, self.options
        tokens, masks = {}, {}
        for i, m in enumerate(self.modalities):
            _, x, mask = encoded[m]
            mask = mask & present[m][:, None]
            # Zeroed so that not even an inf or NaN in a missing input reaches a product.
            x = jnp.where(mask[..., None], x, 0)
            x = dense(cfg.width, "embed", "embed", o.dtype, o.param_dtype, f"in_{m}")(x)
            tokens[m] = constrain(x + types[i].astype(x.dtype), "batch", "length", "embed")
            masks[m] = mask
        return tokens, masks

    def _learned_tokens(self, name, count, batch, dtype):
        init = kernel_init(None, None, "embed", init=nn.initializers.normal(0.02))
        tokens = self.param(name, init, (1, count, self.config.width), jnp.float32)
        return jnp.broadcast_to(tokens, (batch, count, self.config.width)).astype(dtype)

    def _block(self, cls):
        return nn.remat(cls) if self.options.remat else cls

    def _early(self, tokens, masks):
        cfg = self.config
        tokens, masks = list(tokens.values()), list(masks.values())
        batch = tokens[0].shape[0]
        x = jnp.concatenate([self._learned_tokens("cls", 1, batch, tokens[0].dtype), *tokens], 1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), *masks], axis=1)
        x = constrain(x, "batch", "length", "embed")
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, self.options, name="joint")(
            x, key_mask=mask)
        return x[:, 0]

    def _hybrid(self, tokens, masks, present):
        cfg, o = self.config, self.options
        block = self._block(CoAttentionBlock)
        for i in range(cfg.depth):
            tokens = block(cfg.num_heads, cfg.mlp_dim, self.modalities, o,
                           name=f"coattn_{i}")(tokens, masks)
        pooled = {m: pool_tokens(layer_norm(o.dtype, o.param_dtype, f"ln_final_{m}", o.eps)(
            tokens[m]), masks[m], "mean") for m in self.modalities}
        return masked_mean(pooled, present)

    def _bottleneck(self, tokens, masks, present):
        cfg, o = self.config, self.options
        first = tokens[self.modalities[0]]
        batch, count = first.shape[0], cfg.bottleneck_tokens  # config.validate: count >= 1
        z = self._learned_tokens("bottleneck", count, batch, first.dtype)
        here = jnp.stack([present[m] for m in self.modalities], 1)  # [B, M]
        block = self._block(EncoderBlock)
        for i in range(cfg.depth):
            copies = []
            for m in self.modalities:
                x = jnp.concatenate([tokens[m], z], 1)
                mask = jnp.concatenate([masks[m], jnp.ones((batch, count), bool)], 1)
                x = block(cfg.num_heads, cfg.mlp_dim, o, name=f"block_{i}_{m}")(x, mask)
                tokens[m], z_m = x[:, :-count], x[:, -count:]
                copies.append(z_m)
            # z = the mean of the present modalities' copies; unchanged where none is.
            mean = pool_tokens(jnp.stack(copies, 1).reshape(batch, len(copies), -1), here,
                               "mean").reshape(z.shape)
            z = jnp.where(here.any(1)[:, None, None], mean, z)
            z = constrain(z, "batch", "length", "embed")
        return layer_norm(o.dtype, o.param_dtype, "ln_final", o.eps)(z).mean(1)
