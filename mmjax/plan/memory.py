"""Memory per device of a training step: the weights side (parameters, gradients, Adam's
moments), exact from the trainer's own shardings on an abstract mesh, and a lower bound
on the activations the backward pass keeps."""

import math

import jax
import numpy as np

from mmjax.config import Config
from mmjax.parallel import rules
from mmjax.parallel.mesh import MESH_AXES, mesh_shape
from mmjax.plan.forward import check_encoders, encoder_config, token_counts, training_forward
from mmjax.plan.params import abstract_variables
from mmjax.plan.shapes import InputShapes

UNSHARDED_FLAG_BYTES = 1 << 20  # parameters above this that every device holds are listed
UNSHARDED_SHOWN = 8


def weight_memory(cfg: Config, shapes: InputShapes, devices: int,
                  min_unsharded_bytes: int = UNSHARDED_FLAG_BYTES) -> dict:
    """Bytes each device holds for the parameters (uncertainty log-variances included),
    their gradients and Adam's two moments when `devices` devices form the mesh
    cfg.parallel asks for, placed by the trainer's own logical-axis rules (exact; nothing
    is allocated, no device is needed), and the parameters over `min_unsharded_bytes`
    that every device holds whole. Frozen parameters (optim.freeze) are counted with
    moments, so the optimizer figure is an upper bound."""
    model, batch, _ = abstract_variables(cfg, shapes)
    mesh = jax.sharding.AbstractMesh(mesh_shape(cfg.parallel, devices), MESH_AXES)
    parameters = model.parameters(batch, mesh)
    leaves, shardings = jax.tree.leaves(parameters.shapes), jax.tree.leaves(parameters.shardings)
    per_device = sum(math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
                     for leaf, sharding in zip(leaves, shardings, strict=True))
    split = mesh.shape["fsdp"] * mesh.shape["tensor"] > 1
    return {"devices": devices, "mesh": dict(mesh.shape), "params": per_device,
            "gradients": per_device, "optimizer": 2 * per_device,
            "total": 4 * per_device,
            # With data parallelism alone, every parameter is whole by design.
            "unsharded": (rules.unsharded_above(parameters.shardings, parameters.shapes,
                                                min_unsharded_bytes) if split else [])}


# Values a pre-LayerNorm block keeps for its backward pass, per token: the block input, two
# LayerNorm outputs, Q, K, V, the attention output, the residual sum (9 x width), the MLP's
# pre- and post-GELU hidden units (2 x mlp_dim), and per head the attention logits and
# probabilities over the keys (2 x heads x length).
BLOCK_WIDTHS, BLOCK_MLPS, BLOCK_SCORES = 9, 2, 2


def activation_memory(cfg: Config, shapes: InputShapes, devices: int) -> dict:
    """Bytes of activations each device keeps for the backward pass of a training step on
    its share of train.batch_size: per encoder pass the objectives run (MLM's second text
    pass and MAE's visible patches included), `depth` blocks of what BLOCK_* count (with
    model.remat only each block's input, plus one block recomputed at a time), and the
    contrastive logits of each pair (local rows x global columns, float32, with their
    gradient). Heads, fusion and decoders are left out, so it is a lower bound."""
    forward = training_forward(cfg, shapes)
    check_encoders(cfg.model, forward)
    data, fsdp, _ = mesh_shape(cfg.parallel, devices)
    local = cfg.train.batch_size // max(cfg.train.accumulation_steps, 1) // (data * fsdp)
    itemsize = np.dtype(cfg.model.dtype).itemsize
    encoders = {}
    for run in forward.passes:
        enc, (length, tokens) = (encoder_config(cfg.model, run.modality),
                                 token_counts(cfg.model, shapes, run.modality))
        if run.visible:
            length = length - tokens + run.visible
        block = length * (BLOCK_WIDTHS * enc.width + BLOCK_MLPS * enc.mlp_dim
                          + BLOCK_SCORES * enc.num_heads * length)
        kept = length * enc.width * enc.depth + block if cfg.model.remat else block * enc.depth
        name = f"encoders_{run.modality}"
        encoders[name] = encoders.get(name, 0) + local * kept * itemsize
    pairs = len(cfg.objectives.contrastive_pairs) if cfg.objectives.contrastive else 0
    logits = pairs * 2 * local * cfg.train.batch_size * 4
    return {"local_batch": local, **encoders, "contrastive_logits": logits,
            "total": sum(encoders.values()) + logits}


def _bytes(count: float) -> str:
    for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if count >= scale:
            return f"{count / scale:.2f} {suffix}"
    return f"{count:.0f} B"


def format_memory(memory: dict, activations: dict | None = None) -> str:
    mesh = " x ".join(f"{axis} {size}" for axis, size in memory["mesh"].items())
    lines = [f"memory per device on {memory['devices']} devices ({mesh}), weights side:",
             f"  parameters {_bytes(memory['params'])} + gradients "
             f"{_bytes(memory['gradients'])} + Adam moments {_bytes(memory['optimizer'])} = "
             f"{_bytes(memory['total'])}",
             ]
    if activations:
        parts = ", ".join(f"{k} {_bytes(v)}" for k, v in activations.items()
                          if k not in ("local_batch", "total"))
        lines.append(f"activations for {activations['local_batch']} examples per device: "
                     f"{parts} = {_bytes(activations['total'])} (heads, fusion and decoders "
                     "not counted)")
        lines.append(f"  in all at least {_bytes(memory['total'] + activations['total'])}")
    if memory["unsharded"]:
        shown = memory["unsharded"][:UNSHARDED_SHOWN]
        more = len(memory["unsharded"]) - len(shown)
        lines.append(f"  {len(memory['unsharded'])} parameters over "
                     f"{_bytes(UNSHARDED_FLAG_BYTES)} are whole on every device although the "
                     "mesh splits parameters (no rule names their dimensions, or they do not "
                     "divide): " + ", ".join(shown) + (f" and {more} more" if more else ""))
    return "\n".join(lines)
