"""Fusion of modality encoders, chosen by config: late, early or hybrid.

Absent modalities are masked out (excluded from means, never attended to), so the
fused result does not depend on the zero-filled placeholders of missing inputs.
"""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import FusionConfig
from mmjax.nn.encoders import pool_tokens
from mmjax.nn.layers import constrain, dense, kernel_init
from mmjax.nn.transformer import BlockOptions, Transformer

KINDS = ("late", "early", "hybrid")


def masked_mean(embeddings: dict, present: dict):
    """Mean over the modalities present in each example; zeros where none is."""
    stacked = jnp.stack([embeddings[m] for m in embeddings], axis=1)  # [B, M, E]
    return pool_tokens(stacked, jnp.stack([present[m] for m in embeddings], axis=1), "mean")


class Fusion(nn.Module):
    """Combines encoder outputs into one vector per example.

    late: the mean of the projected embeddings of the present modalities.
    early: one transformer over every present modality's tokens, with modality-type
      embeddings and a CLS token that is pooled.
    hybrid: text tokens cross-attend to the other modalities' tokens for `depth`
      layers; a learned null token keeps the attention defined when nothing else is
      present. The text is then mean-pooled.
    """

    config: FusionConfig
    modalities: tuple[str, ...]
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, encoded: dict, embeddings: dict, present: dict):
        kind = self.config.kind
        if kind == "late":
            return masked_mean(embeddings, present)
        if kind not in KINDS:
            raise ValueError(f"unknown fusion '{kind}'; choose from {KINDS}")
        init = kernel_init(None, "embed", init=nn.initializers.normal(0.02))
        types = self.param("type_embed", init, (len(self.modalities), self.config.width),
                           jnp.float32)
        if kind == "early":
            return self._early(encoded, present, types)
        return self._hybrid(encoded, present, types)

    def _tokens(self, encoded, present, modalities, types):
        """Every modality's tokens at the fusion width, plus its type embedding."""
        cfg, o = self.config, self.options
        tokens, masks = [], []
        for m in modalities:
            _, x, mask = encoded[m]
            x = dense(cfg.width, "embed", "embed", o.dtype, o.param_dtype, f"in_{m}")(x)
            tokens.append(x + types[self.modalities.index(m)].astype(x.dtype))
            masks.append(mask & present[m][:, None])
        return tokens, masks

    def _learned_token(self, name, batch, dtype):
        init = kernel_init(None, None, "embed", init=nn.initializers.normal(0.02))
        token = self.param(name, init, (1, 1, self.config.width), jnp.float32)
        return jnp.broadcast_to(token, (batch, 1, self.config.width)).astype(dtype)

    def _early(self, encoded, present, types):
        cfg = self.config
        tokens, masks = self._tokens(encoded, present, self.modalities, types)
        batch = tokens[0].shape[0]
        x = jnp.concatenate([self._learned_token("cls", batch, tokens[0].dtype), *tokens], 1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), *masks], axis=1)
        x = constrain(x, "batch", "length", "embed")
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, self.options, name="joint")(
            x, key_mask=mask)
        return x[:, 0]

    def _hybrid(self, encoded, present, types):
        cfg = self.config
        if "report" not in self.modalities:
            raise ValueError("hybrid fusion needs the report (text) modality")
        others = [m for m in self.modalities if m != "report"]
        (text,), (text_mask,) = self._tokens(encoded, present, ["report"], types)
        batch = text.shape[0]
        context, context_mask = self._tokens(encoded, present, others, types)
        context = jnp.concatenate([self._learned_token("null", batch, text.dtype), *context], 1)
        context_mask = jnp.concatenate([jnp.ones((batch, 1), bool), *context_mask], axis=1)
        x = Transformer(cfg.depth, cfg.num_heads, cfg.mlp_dim, self.options,
                        cross_attention=True, name="cross")(
            text, key_mask=text_mask, context=context, context_mask=context_mask)
        return pool_tokens(x, text_mask, "mean")
