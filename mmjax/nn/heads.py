"""Task heads on a shared backbone."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.embed import PositionEmbed
from mmjax.nn.layers import dense, kernel_init, layer_norm
from mmjax.nn.transformer import BlockOptions, Transformer


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


class DecisionHead(nn.Module):
    """Decision-level late fusion: a ClassifierHead per modality on its own embedding, the
    logits combined by a softmax over the modalities present in each example.

    gate=weights: one learned score per modality (all equal at the start); gate=gate: each
    score computed from that example's embedding, so a poor recording can count less. An
    absent modality gets weight 0; an example with none present gets zero logits.
    `fused` is (embeddings [B, M, E], present [B, M]) in `modalities` order.
    """

    num_outputs: int
    modalities: tuple[str, ...]
    gate: str = "weights"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, fused):
        embeddings, present = fused
        logits = jnp.stack([
            ClassifierHead(self.num_outputs, self.dtype, self.param_dtype, name=f"head_{m}")(
                embeddings[:, i]) for i, m in enumerate(self.modalities)], 1)  # [B, M, K]
        if self.gate == "weights":
            scores = self.param("modality_scores", kernel_init(None, init=nn.initializers.zeros),
                                (len(self.modalities),), jnp.float32)[None]
        elif self.gate == "gate":
            scores = jnp.concatenate([
                dense(1, "embed", (None,), self.dtype, self.param_dtype, f"gate_{m}")(
                    embeddings[:, i]) for i, m in enumerate(self.modalities)], 1)
        else:
            raise ValueError(f"unknown decision gate '{self.gate}' (expected 'weights' or "
                             "'gate')")
        # A finite mask value: an example with none present gets a finite softmax (then
        # zeroed), where -inf would put NaN into its gradient.
        weights = nn.softmax(jnp.where(present, scores.astype(jnp.float32), -1e9), axis=1)
        weights = jnp.where(present, weights, 0.0)
        return jnp.einsum("bm,bmk->bk", weights, logits)


class MlpProjection(nn.Module):
    """Linear, exact GELU, linear, without biases: open_clip's 'mlp' projection of a
    Hugging Face text tower (BiomedCLIP)."""

    hidden: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = dense(self.hidden, "embed", "mlp", self.dtype, self.param_dtype, "hidden",
                  use_bias=False)(x)
        return dense(self.features, "mlp", "embed", self.dtype, self.param_dtype, "out",
                     use_bias=False)(nn.gelu(x, approximate=False))


class MlmHead(nn.Module):
    """Masked-language-model transform; the caller ties the output to the embeddings."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        x = dense(tokens.shape[-1], "embed", "embed", self.dtype, self.param_dtype,
                  "transform")(tokens)
        return layer_norm(self.dtype, self.param_dtype, "ln")(nn.gelu(x))


class MaeDecoder(nn.Module):
    """Masked-autoencoder decoder: visible tokens plus a mask token at every hidden
    position, fixed sin-cos positions, a light transformer, one patch of pixels out.

    Works for image patches, video tubes and signal patches alike: it only sees a
    token sequence of `num_patches` positions.
    """

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, visible, keep, num_patches: int, patch_dim: int):
        """visible [B, K, D] encoder tokens at positions keep [B, K] -> [B, num_patches,
        patch_dim] predictions for every position."""
        o = self.options
        x = dense(self.width, "embed", "embed", o.dtype, o.param_dtype, "embed")(visible)
        mask_token = self.param("mask_token", kernel_init(None, None, "embed",
                                                          init=nn.initializers.normal(0.02)),
                                (1, 1, self.width), jnp.float32)
        full = jnp.broadcast_to(mask_token.astype(x.dtype),
                                (x.shape[0], num_patches, self.width))
        rows = jnp.arange(x.shape[0])[:, None]
        full = full.at[rows, keep].set(x)
        full = PositionEmbed("sincos")(full)
        full = Transformer(self.depth, self.num_heads, self.mlp_dim, o, name="transformer")(full)
        out = dense(patch_dim, "embed", "patch", o.dtype, o.param_dtype, "pixels")
        return out(full).astype(jnp.float32)


class ReportDecoder(nn.Module):
    """Causal transformer over report tokens that cross-attends to other modalities'
    tokens; the caller embeds tokens and ties the output to the same embedding."""

    depth: int
    num_heads: int
    mlp_dim: int
    max_length: int = 0
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, embedded, mask, context, context_mask, decode=False):
        """A learned null memory token is always present, so attention stays defined
        (and independent of placeholders) when no other modality is.

        decode: a first call on the full length with the context primes the 'cache';
        each later call takes the next token, with mask, context and context_mask None.
        """
        if context is not None:
            batch, width = embedded.shape[0], context.shape[-1]
            null = self.param("null_memory", kernel_init(None, None, "embed",
                                                         init=nn.initializers.normal(0.02)),
                              (1, 1, width), jnp.float32)
            context = jnp.concatenate([jnp.broadcast_to(null, (batch, 1, width)).astype(
                context.dtype), context], axis=1)
            context_mask = jnp.concatenate([jnp.ones((batch, 1), bool), context_mask], axis=1)
        x = PositionEmbed("learned", self.max_length, name="pos_embed")(embedded, decode)
        return Transformer(self.depth, self.num_heads, self.mlp_dim, self.options,
                           cross_attention=True, name="transformer")(
            x, key_mask=mask, context=context, context_mask=context_mask, causal=True,
            decode=decode)
