"""The plan: parameters and training FLOPs per module of a config, and its table."""

from mmjax.config import Config
from mmjax.plan.flops import TRAIN_FLOPS_PER_FORWARD, Flops, flops_per_example
from mmjax.plan.forward import check_encoders, token_counts, training_forward
from mmjax.plan.params import count_params, definition
from mmjax.plan.shapes import InputShapes

MFU_NOTE = f"""\
MFU = train FLOPs/example x examples/s / (chips x peak FLOP/s). Train FLOPs are
{TRAIN_FLOPS_PER_FORWARD} x the matmuls of the training forward of the enabled objectives
(backward = 2 x forward); attention scores and AV are counted in full (padding and causal
masks included); norms, softmax, activations, the batch-coupled contrastive logits and
remat recomputation are not (counting those would make it HFU)."""


def plan(cfg: Config, shapes: InputShapes) -> dict:
    """Parameters and training FLOPs per module of the model cfg trains, for its
    enabled objectives on cfg.data.modalities."""
    forward = training_forward(cfg, shapes)
    check_encoders(cfg.model, forward)
    return {
        "name": cfg.name,
        "modalities": tuple(cfg.data.modalities),
        "objectives": definition(cfg, shapes).objectives.weights,
        "shapes": shapes,
        "tokens": {m: token_counts(cfg.model, shapes, m)[0] for m in forward.embedded},
        "mae_visible": dict(forward.mae),
        "params": count_params(cfg, shapes),
        "flops": flops_per_example(cfg, shapes),
    }


def _si(count: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix}"
    return f"{count:.0f}"


def _header(result: dict) -> list[str]:
    objectives = ", ".join(f"{name} {weight:g}" for name, weight in result["objectives"].items())
    tokens = ", ".join(f"{m} {n}" for m, n in result["tokens"].items())
    visible = ", ".join(f"{m} {n}" for m, n in result["mae_visible"].items())
    mae = f"; patches MAE keeps visible: {visible}" if visible else ""
    return [f"plan {result['name']}: {result['params']['total']:,} parameters; losses "
            f"{objectives}",
            f"encoder tokens per example (CLS included): {tokens}{mae}; "
            f"vocab {result['shapes'].vocab_size}"]


def format_plan(result: dict) -> str:
    """A table of `plan`'s result: params and training GFLOPs per example per module."""
    params, flops = result["params"], result["flops"]
    modules = [m for m in flops if m != "total"]
    modules += [m for m in params if m not in flops and m != "total"]
    columns = (f"{'module':<18}{'params':>10}{'share':>8}{'train GFLOP/ex':>16}{'share':>8}"
               f"{'attention':>11}")
    lines = [*_header(result), "", columns]
    total_params, total_flops = params["total"], flops["total"].total
    for name in [*modules, "total"]:
        count, f = params.get(name, 0), flops.get(name, Flops())
        lines.append(
            f"{name:<18}{_si(count):>10}{count / max(total_params, 1):>8.1%}"
            f"{f.total / 1e9:>16.4f}{f.total / max(total_flops, 1):>8.1%}"
            f"{f.attention / max(f.total, 1):>11.1%}")
    lines.insert(-1, "-" * len(columns))
    return "\n".join([*lines, "", MFU_NOTE])
