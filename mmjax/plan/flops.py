"""Training FLOPs per example, counted analytically from the config: matmuls only
(2·m·n·k each), the MFU numerator of the scaling literature (6·N per token for a dense
transformer), for exactly what the enabled objectives run (forward.py). `compiled_flops`
cross-checks them against XLA's count of the compiled training forward, which also
includes the elementwise work left out here."""

import dataclasses

import flax.linen as nn
import jax

from mmjax.config import Config, ModelConfig
from mmjax.data import schema
from mmjax.plan.forward import (
    EncoderPass,
    TrainingForward,
    check_encoders,
    encoder_config,
    token_counts,
    training_forward,
)
from mmjax.plan.params import abstract_variables
from mmjax.plan.shapes import InputShapes

# A training step runs the forward once and the backward (gradients with respect to
# activations and to weights, a forward's worth of matmuls each) once.
TRAIN_FLOPS_PER_FORWARD = 3
SIGNAL_LEADS = len(schema.ECG_LEADS)


@dataclasses.dataclass(frozen=True)
class Flops:
    """FLOPs split into dense matmuls (against weights) and attention (QK^T and AV), which
    grows with the square of the sequence length."""

    dense: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.dense + self.attention

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.dense + other.dense, self.attention + other.attention)

    def __mul__(self, factor: float) -> "Flops":
        return Flops(self.dense * factor, self.attention * factor)


def _dense(tokens: int, d_in: int, d_out: int) -> Flops:
    return Flops(dense=2 * tokens * d_in * d_out)


def _attention(queries: int, keys: int, width: int) -> Flops:
    """Q and output projections of the queries, K and V of the keys, then QK^T and AV."""
    projections = _dense(queries, width, 2 * width) + _dense(keys, width, 2 * width)
    return projections + Flops(attention=2 * 2 * queries * keys * width)


def _transformer(depth: int, length: int, width: int, mlp_dim: int, sequences: int = 1,
                 context: int = 0) -> Flops:
    """`depth` blocks over `sequences` sequences of `length` tokens; `context` > 0 adds
    cross-attention to that many tokens in every block."""
    block = (_attention(length, length, width) + _dense(length, width, mlp_dim)
             + _dense(length, mlp_dim, width))
    if context:
        block = block + _attention(length, context, width)
    return block * (depth * sequences)


def patch_dim(model_cfg: ModelConfig, shapes: InputShapes, modality: str) -> int:
    """Input values per patch: what the patch embedding reads and MAE reconstructs."""
    cfg = encoder_config(model_cfg, modality)
    if modality == "image":
        return cfg.patch_size ** 2 * shapes.channels
    if modality == "video":
        return cfg.tubelet_frames * cfg.patch_size ** 2 * shapes.channels
    return cfg.patch_size * SIGNAL_LEADS


def _encoder(model_cfg: ModelConfig, shapes: InputShapes, run: EncoderPass) -> Flops:
    """One encoder pass: the patch embedding (of every patch, before MAE drops some),
    the transformer over the tokens kept, and attention pooling when its output is used."""
    m = run.modality
    cfg = encoder_config(model_cfg, m)
    length, tokens = token_counts(model_cfg, shapes, m)
    if m == "report":  # the token embedding is a lookup
        return _transformer(cfg.depth, length, cfg.width, cfg.mlp_dim)
    embed = _dense(tokens, patch_dim(model_cfg, shapes, m), cfg.width)
    if m == "video" and cfg.attention == "factorised":
        # Spatial blocks attend within each time step, temporal ones along each position.
        times = shapes.frames // cfg.tubelet_frames
        space = tokens // times
        return (embed + _transformer(cfg.depth, space, cfg.width, cfg.mlp_dim, times)
                + _transformer(cfg.depth, times, cfg.width, cfg.mlp_dim, space))
    if run.visible:
        length, tokens = length - tokens + run.visible, run.visible
    flops = embed + _transformer(cfg.depth, length, cfg.width, cfg.mlp_dim)
    if cfg.pool == "map" and run.pooled:
        flops = flops + _attention(1, tokens, cfg.width)
    return flops


def _fusion(model_cfg: ModelConfig, shapes: InputShapes, modalities) -> Flops:
    cfg = model_cfg.fusion
    if cfg.kind in ("late", "decision"):  # a mean of the embeddings, or of head logits
        return Flops()
    tokens = {m: token_counts(model_cfg, shapes, m)[1] for m in modalities}
    flops = sum((_dense(tokens[m], encoder_config(model_cfg, m).width, cfg.width)
                 for m in modalities), Flops())
    if cfg.kind == "early":  # one transformer over a CLS token and every token
        return flops + _transformer(cfg.depth, 1 + sum(tokens.values()), cfg.width,
                                    cfg.mlp_dim)
    if cfg.kind == "hybrid":  # co-attention: each modality's queries, the others' keys
        total = sum(tokens.values())
        block = (_dense(total, cfg.width, 4 * cfg.width)  # every token's Q, K, V and output
                 + _dense(total, cfg.width, cfg.mlp_dim) + _dense(total, cfg.mlp_dim, cfg.width)
                 + Flops(attention=sum(4 * n * (total - n) * cfg.width
                                       for n in tokens.values())))
        return flops + block * cfg.depth
    if cfg.kind == "bottleneck":  # each modality's block over its tokens and the shared ones
        return flops + sum((_transformer(cfg.depth, n + cfg.bottleneck_tokens, cfg.width,
                                         cfg.mlp_dim) for n in tokens.values()), Flops())
    raise ValueError(f"unknown fusion '{cfg.kind}'")


def _heads(model_cfg: ModelConfig, shapes: InputShapes, forward: TrainingForward) -> Flops:
    """The classifier heads' logits from the fused vector; the MLM head's transform and
    tied-vocabulary logits over every text token."""
    kind = model_cfg.fusion.kind
    fused = model_cfg.embed_dim if kind in ("late", "decision") else model_cfg.fusion.width
    # decision: a head per modality (and a gate's score each)
    heads = len(forward.embedded) if kind == "decision" else 1
    flops = _dense(heads, fused, forward.head_outputs + (kind == "decision"))
    if forward.mlm:
        width = model_cfg.text.width
        flops = (flops + _dense(shapes.text_len, width, width)
                 + _dense(shapes.text_len, width, shapes.vocab_size))
    return flops


def _mae_decoder(model_cfg: ModelConfig, shapes: InputShapes, modality: str,
                 visible: int) -> Flops:
    """Visible tokens to the decoder width, a transformer over every patch position,
    each position's pixels out."""
    d, patches = model_cfg.decoder, token_counts(model_cfg, shapes, modality)[1]
    return (_dense(visible, encoder_config(model_cfg, modality).width, d.width)
            + _transformer(d.depth, patches, d.width, d.mlp_dim)
            + _dense(patches, d.width, patch_dim(model_cfg, shapes, modality)))


def _report_decoder(model_cfg: ModelConfig, shapes: InputShapes, context) -> Flops:
    """The other modalities' tokens and/or pooled vectors (`model.decoder.memory`) projected
    to the text width (the memory), a causal transformer cross-attending to a null token and
    the memory, tied vocabulary logits."""
    width, length, memory_kind = model_cfg.text.width, shapes.text_len, model_cfg.decoder.memory
    tokens = {m: (token_counts(model_cfg, shapes, m)[1] if memory_kind != "pooled" else 0)
              + (memory_kind != "tokens") for m in context}
    memory = sum((_dense(n, encoder_config(model_cfg, m).width, width)
                  for m, n in tokens.items()), Flops())
    return (memory + _transformer(model_cfg.decoder.depth, length, width,
                                  model_cfg.decoder.mlp_dim, context=1 + sum(tokens.values()))
            + _dense(length, width, shapes.vocab_size))


def forward_flops(cfg: Config, shapes: InputShapes) -> dict[str, Flops]:
    """Analytic FLOPs of the training forward of one example, per plan row (the module
    doing the work) and in `total`."""
    model_cfg, forward = cfg.model, training_forward(cfg, shapes)
    check_encoders(model_cfg, forward)
    flops = {}
    for run in forward.passes:
        name = f"encoders_{run.modality}"
        flops[name] = flops.get(name, Flops()) + _encoder(model_cfg, shapes, run)
    flops["projections"] = sum(
        (_dense(1, encoder_config(model_cfg, m).width, model_cfg.embed_dim)
         for m in forward.embedded), Flops())
    if forward.fusions:
        flops["fusion"] = _fusion(model_cfg, shapes, cfg.data.modalities) * forward.fusions
    if forward.head_outputs or forward.mlm:
        flops["heads"] = _heads(model_cfg, shapes, forward)
    decoders = [_mae_decoder(model_cfg, shapes, m, visible) for m, visible in forward.mae]
    if forward.caption:
        decoders.append(_report_decoder(model_cfg, shapes, forward.caption_context))
    if decoders:
        flops["decoders"] = sum(decoders, Flops())
    flops["total"] = sum(flops.values(), Flops())
    return flops


def flops_per_example(cfg: Config, shapes: InputShapes) -> dict[str, Flops]:
    """Analytic training FLOPs per example (forward and backward), per row and total."""
    return {name: f * TRAIN_FLOPS_PER_FORWARD
            for name, f in forward_flops(cfg, shapes).items()}


def compiled_flops(cfg: Config, shapes: InputShapes) -> float:
    """XLA's cost analysis of the jitted training forward (objectives.forward) of one
    example: it also counts elementwise work (norms, softmax, GELU, masking), so it runs
    a few percent above the analytic forward."""
    model, batch, variables = abstract_variables(cfg, shapes)
    variables = nn.meta.unbox(variables)
    forward = jax.jit(model.forward).lower(
        variables["params"], variables.get("batch_stats", {}), batch, jax.random.key(0))
    return float(forward.compile().cost_analysis()["flops"])
