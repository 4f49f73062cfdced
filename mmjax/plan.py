"""The model planner: parameters and training FLOPs per module, before anything runs.

Parameters come from `jax.eval_shape` of the model's real `init`, so they are exact and
nothing is allocated. FLOPs are counted analytically from the config, matmuls only
(2·m·n·k each), which is the MFU numerator of the scaling literature (6·N per token for
a dense transformer); `compiled_flops` cross-checks them against XLA's own count of the
compiled forward, which also includes the elementwise work left out here.
"""

import dataclasses
import functools
import math
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from mmjax.config import Config, ConfigError, ModelConfig
from mmjax.data import pipeline, schema, shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.schema import MODALITIES
from mmjax.nn.model import MultimodalModel
from mmjax.parallel import rules
from mmjax.parallel.mesh import MESH_AXES, mesh_shape

# A training step runs the forward once and the backward (gradients with respect to
# activations and to weights, a forward's worth of matmuls each) once.
TRAIN_FLOPS_PER_FORWARD = 3
SIGNAL_LEADS = len(schema.ECG_LEADS)
METHODS = {"all": None, "contrastive": "contrastive"}  # plan method -> MultimodalModel method
# Top-level parameters shown in one row of the plan; every other name is its own row.
GROUPS = {"logit_scale": "contrastive", "logit_bias": "contrastive", "diagnosis": "heads",
          "risk": "heads", "matching": "heads", "mlm": "heads"}
GROUP_PREFIXES = {"proj_": "projections"}
MFU_NOTE = f"""\
MFU = train FLOPs/example x examples/s / (chips x peak FLOP/s). Train FLOPs are
{TRAIN_FLOPS_PER_FORWARD} x the forward's matmuls (backward = 2 x forward); attention scores
and AV are counted in full (padding and causal masks included); norms, softmax,
activations and remat recomputation are not (counting those would make it HFU)."""


@dataclasses.dataclass(frozen=True)
class InputShapes:
    """Per-example input sizes; defaults are `mmjax data synthmed`'s."""

    image_size: int = 64  # image and video frame side
    channels: int = 1
    frames: int = 16
    signal_samples: int = 1000  # 10 s at 100 Hz
    text_len: int = 96
    vocab_size: int = 1024
    num_labels: int = 0


def input_shapes_from_manifest(dataset_dir: str | Path, cfg: Config,
                               fallback: InputShapes = InputShapes()) -> InputShapes:
    """The shapes the pipeline feeds for `cfg` from a dataset's manifest and tokenizer;
    fields the dataset lacks keep `fallback`'s."""
    manifest = shards.read_manifest(dataset_dir)
    fields = {name: spec["shape"] for name, spec in manifest.fields.items()}
    data = dataclasses.replace(cfg.data, path=str(dataset_dir))
    shapes = dataclasses.replace(fallback, text_len=data.max_text_len,
                                 num_labels=len(manifest.label_names))
    frame = fields.get("image") or (fields["video"][1:] if "video" in fields else None)
    if frame:
        shapes = dataclasses.replace(shapes, image_size=frame[0], channels=frame[-1])
    if "video" in fields:
        shapes = dataclasses.replace(shapes, frames=data.video_frames or fields["video"][0])
    if "signal" in fields:
        shapes = dataclasses.replace(shapes, signal_samples=_signal_samples(
            data.signal_seconds, manifest.attributes.get("signal_rate_hz"), fields["signal"][0]))
    if data.tokenizer or (Path(dataset_dir) / tokenizer_lib.DATASET_FILE).is_file():
        shapes = dataclasses.replace(
            shapes, vocab_size=pipeline.load_tokenizer(data).get_vocab_size())
    return shapes


def _signal_samples(seconds: float, rate_hz: float | None, stored: int) -> int:
    """The pipeline's crop: data.signal_seconds at the dataset's rate, else all samples."""
    if not seconds:
        return stored
    if not rate_hz:
        raise ConfigError("data.signal_seconds is set but the dataset has no signal_rate_hz")
    return int(round(seconds * rate_hz))


def shape_overrides(assignments, base: InputShapes = InputShapes()) -> InputShapes:
    """`base` with 'key=value' sizes replaced, e.g. image_size=224 (the CLI's --shape)."""
    sizes = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if key not in {f.name for f in dataclasses.fields(InputShapes)}:
            raise ConfigError(f"--shape {assignment}: '{key}' is not one of "
                              f"{', '.join(f.name for f in dataclasses.fields(InputShapes))}")
        try:
            sizes[key] = int(value)
        except ValueError:
            raise ConfigError(f"--shape {assignment}: '{value}' is not an integer") from None
    return dataclasses.replace(base, **sizes)


def input_shapes(cfg: Config, fallback: InputShapes = InputShapes()) -> InputShapes:
    """From data.path's manifest when there is one, else `fallback` at data.max_text_len."""
    if cfg.data.path and (Path(cfg.data.path) / shards.MANIFEST).is_file():
        return input_shapes_from_manifest(cfg.data.path, cfg, fallback)
    return dataclasses.replace(fallback, text_len=cfg.data.max_text_len)


def example_batch(shapes: InputShapes, modalities, batch_size: int = 1) -> dict:
    """Zero inputs shaped like the pipeline's, with every token and modality present."""
    _check_modalities(modalities)
    b, s, c = batch_size, shapes.image_size, shapes.channels
    inputs = {
        "image": {"image": np.zeros((b, s, s, c), np.float32)},
        "video": {"video": np.zeros((b, shapes.frames, s, s, c), np.float32)},
        "signal": {"signal": np.zeros((b, shapes.signal_samples, SIGNAL_LEADS), np.float32),
                   "signal_leads": np.ones((b, SIGNAL_LEADS), bool)},
        "report": {"text": np.zeros((b, shapes.text_len), np.int32),
                   "text_mask": np.ones((b, shapes.text_len), bool)},
    }
    batch = {f"has_{m}": np.ones(b, bool) for m in modalities}
    for m in modalities:
        batch.update(inputs[m])
    return batch


def _check_transformer_encoders(model_cfg: ModelConfig, modalities) -> None:
    """The analytic FLOPs count transformer encoders; it would be silently wrong for the
    others, so they are refused by name."""
    unmodelled = {"model.image_encoder": "image" in modalities and model_cfg.image_encoder != "vit",
                  "model.video.encoder": "video" in modalities
                  and model_cfg.video.encoder != "tubelet",
                  "data.modalities": "audio" in modalities}
    named = [key for key, bad in unmodelled.items() if bad]
    if named:
        raise ConfigError(f"the planner models transformer encoders over image, video, signal "
                          f"and report only; {', '.join(named)} choose(s) an encoder it cannot "
                          "count yet (CNN, frame + temporal or audio)")


def _check_modalities(modalities) -> None:
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")


def _method(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
    return METHODS[method]


def _abstract(model_cfg: ModelConfig, shapes: InputShapes, modalities, method: str):
    """The model, an example batch and its parameters as shapes only (nothing allocated)."""
    model = MultimodalModel(model_cfg, shapes.vocab_size, tuple(modalities), shapes.num_labels)
    batch = example_batch(shapes, modalities)
    init = functools.partial(model.init, method=_method(method))
    params = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), batch)["params"])
    return model, batch, params


def _group(name: str) -> str:
    for prefix, group in GROUP_PREFIXES.items():
        if name.startswith(prefix):
            return group
    return GROUPS.get(name, name)


def count_params(model_cfg: ModelConfig, shapes: InputShapes, modalities,
                 method: str = "all") -> dict[str, int]:
    """Parameters per top-level module (see GROUPS) and in `total`, exactly as `init`
    through `method` ('all' = __call__, or 'contrastive') creates them."""
    _, _, params = _abstract(model_cfg, shapes, modalities, method)
    counts = {}
    for name, tree in params.items():
        size = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
        counts[_group(name)] = counts.get(_group(name), 0) + size
    counts["total"] = sum(counts.values())
    return counts


# ---- Analytic FLOPs.


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


def _encoder_config(model_cfg: ModelConfig, modality: str):
    return {"image": model_cfg.image, "video": model_cfg.video, "signal": model_cfg.signal,
            "report": model_cfg.text}[modality]


def token_counts(model_cfg: ModelConfig, shapes: InputShapes, modality: str) -> tuple[int, int]:
    """(tokens the encoder's transformer runs over, tokens it hands to fusion): a CLS
    token is attended over but only pooled."""
    cfg, side = _encoder_config(model_cfg, modality), shapes.image_size
    if modality == "report":
        return shapes.text_len, shapes.text_len
    if modality == "image":
        tokens = (side // cfg.patch_size) ** 2
    elif modality == "video":
        tokens = shapes.frames // cfg.tubelet_frames * (side // cfg.patch_size) ** 2
        if cfg.attention == "factorised":
            return tokens, tokens
    else:
        tokens = shapes.signal_samples // cfg.patch_size
    return tokens + (cfg.pool == "cls"), tokens


def _encoder(model_cfg: ModelConfig, shapes: InputShapes, modality: str) -> Flops:
    cfg = _encoder_config(model_cfg, modality)
    length, tokens = token_counts(model_cfg, shapes, modality)
    if modality == "report":  # the token embedding is a lookup
        return _transformer(cfg.depth, length, cfg.width, cfg.mlp_dim)
    if modality == "image":
        patch = cfg.patch_size ** 2 * shapes.channels
    elif modality == "video":
        patch = cfg.tubelet_frames * cfg.patch_size ** 2 * shapes.channels
    else:
        patch = cfg.patch_size * SIGNAL_LEADS
    embed = _dense(tokens, patch, cfg.width)
    if modality == "video" and cfg.attention == "factorised":
        # Spatial blocks attend within each time step, temporal ones along each position.
        times = shapes.frames // cfg.tubelet_frames
        space = tokens // times
        return (embed + _transformer(cfg.depth, space, cfg.width, cfg.mlp_dim, times)
                + _transformer(cfg.depth, times, cfg.width, cfg.mlp_dim, space))
    flops = embed + _transformer(cfg.depth, length, cfg.width, cfg.mlp_dim)
    if cfg.pool == "map":
        flops = flops + _attention(1, tokens, cfg.width)
    return flops


def _fusion(model_cfg: ModelConfig, shapes: InputShapes, modalities) -> Flops:
    cfg = model_cfg.fusion
    if cfg.kind == "late":  # a mean of the embeddings
        return Flops()
    tokens = {m: token_counts(model_cfg, shapes, m)[1] for m in modalities}
    flops = sum((_dense(tokens[m], _encoder_config(model_cfg, m).width, cfg.width)
                 for m in modalities), Flops())
    if cfg.kind == "early":  # one transformer over a CLS token and every token
        return flops + _transformer(cfg.depth, 1 + sum(tokens.values()), cfg.width,
                                    cfg.mlp_dim)
    if cfg.kind == "hybrid":  # text attends to itself, then to a null token and the rest
        context = 1 + sum(n for m, n in tokens.items() if m != "report")
        return flops + _transformer(cfg.depth, tokens["report"], cfg.width, cfg.mlp_dim,
                                    context=context)
    raise ValueError(f"unknown fusion '{cfg.kind}'")


def _heads(model_cfg: ModelConfig, shapes: InputShapes, modalities, include_mlm: bool) -> Flops:
    """Risk (1), matching (2) and diagnosis logits from the fused vector; the MLM head's
    transform and tied-vocabulary logits over every text token."""
    fused = model_cfg.embed_dim if model_cfg.fusion.kind == "late" else model_cfg.fusion.width
    flops = _dense(1, fused, 1 + 2 + shapes.num_labels)
    if include_mlm and "report" in modalities:
        width = model_cfg.text.width
        flops = (flops + _dense(shapes.text_len, width, width)
                 + _dense(shapes.text_len, width, shapes.vocab_size))
    return flops


def forward_flops(model_cfg: ModelConfig, shapes: InputShapes, modalities, method: str = "all",
                  include_mlm: bool = False) -> dict[str, Flops]:
    """Analytic forward FLOPs per example, per module and in `total`. `include_mlm`
    counts the MLM head, whose L·D·V vocabulary matmul only runs if the objective uses it."""
    _check_modalities(modalities)
    flops = {f"encoders_{m}": _encoder(model_cfg, shapes, m) for m in modalities}
    flops["projections"] = sum(
        (_dense(1, _encoder_config(model_cfg, m).width, model_cfg.embed_dim)
         for m in modalities), Flops())
    if _method(method) is None:
        flops["fusion"] = _fusion(model_cfg, shapes, modalities)
        flops["heads"] = _heads(model_cfg, shapes, modalities, include_mlm)
    flops["total"] = sum(flops.values(), Flops())
    return flops


def flops_per_example(model_cfg: ModelConfig, shapes: InputShapes, modalities,
                      method: str = "all", include_mlm: bool = False) -> dict[str, Flops]:
    """Analytic training FLOPs per example (forward and backward), per module and total."""
    forward = forward_flops(model_cfg, shapes, modalities, method, include_mlm)
    return {name: f * TRAIN_FLOPS_PER_FORWARD for name, f in forward.items()}


def compiled_flops(model_cfg: ModelConfig, shapes: InputShapes, modalities,
                   method: str = "all") -> float:
    """XLA's cost analysis of the jitted forward of one example: it also counts
    elementwise work (norms, softmax, GELU), so it runs a few percent above the analytic
    forward."""
    model, batch, params = _abstract(model_cfg, shapes, modalities, method)
    forward = jax.jit(lambda p, b: model.apply({"params": p}, b, method=_method(method)))
    return float(forward.lower(params, batch).compile().cost_analysis()["flops"])


# ---- Memory.

UNSHARDED_FLAG_BYTES = 1 << 20  # parameters above this that every device holds are listed
UNSHARDED_SHOWN = 8


def weight_memory(cfg: Config, shapes: InputShapes, devices: int, method: str = "all",
                  min_unsharded_bytes: int = UNSHARDED_FLAG_BYTES) -> dict:
    """Bytes each device holds for the parameters, their gradients and Adam's two moments
    when `devices` devices form the mesh cfg.parallel asks for, placed by the trainer's own
    logical-axis rules (exact; nothing is allocated, no device is needed), and the
    parameters over `min_unsharded_bytes` that every device holds whole. Frozen parameters
    (optim.freeze) are counted with moments, so the optimizer figure is an upper bound."""
    modalities = tuple(cfg.data.modalities)
    model = MultimodalModel(cfg.model, shapes.vocab_size, modalities, shapes.num_labels)
    boxed = rules.abstract_params(model, jax.random.key(0), example_batch(shapes, modalities),
                                  _method(method))
    mesh = jax.sharding.AbstractMesh(mesh_shape(cfg.parallel, devices), MESH_AXES)
    shardings = rules.param_shardings(mesh, boxed)
    leaves = jax.tree.leaves(nn.meta.unbox(boxed))
    per_device = sum(math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
                     for leaf, sharding in zip(leaves, jax.tree.leaves(shardings), strict=True))
    return {"devices": devices, "mesh": dict(mesh.shape), "params": per_device,
            "gradients": per_device, "optimizer": 2 * per_device,
            "total": 4 * per_device,
            # With data parallelism alone, every parameter is whole by design.
            "unsharded": (rules.unsharded_above(shardings, boxed, min_unsharded_bytes)
                          if mesh.shape["fsdp"] * mesh.shape["tensor"] > 1 else [])}


# Values a pre-LayerNorm block keeps for its backward pass, per token: the block input, two
# LayerNorm outputs, Q, K, V, the attention output, the residual sum (9 x width), the MLP's
# pre- and post-GELU hidden units (2 x mlp_dim), and per head the attention logits and
# probabilities over the keys (2 x heads x length).
BLOCK_WIDTHS, BLOCK_MLPS, BLOCK_SCORES = 9, 2, 2


def activation_memory(cfg: Config, shapes: InputShapes, devices: int) -> dict:
    """Bytes of activations each device keeps for the backward pass of a training step on
    its share of train.batch_size: per encoder, `depth` blocks of what BLOCK_* count (with
    model.remat only each block's input, plus one block recomputed at a time), and the
    contrastive logits of each pair (local rows x global columns, float32, with their
    gradient). Heads, fusion and decoders are left out, so it is a lower bound."""
    modalities = tuple(cfg.data.modalities)
    _check_transformer_encoders(cfg.model, modalities)
    data, fsdp, _ = mesh_shape(cfg.parallel, devices)
    local = cfg.train.batch_size // max(cfg.train.accumulation_steps, 1) // (data * fsdp)
    itemsize = np.dtype(cfg.model.dtype).itemsize
    encoders = {}
    for m in modalities:
        enc, (length, _) = _encoder_config(cfg.model, m), token_counts(cfg.model, shapes, m)
        block = length * (BLOCK_WIDTHS * enc.width + BLOCK_MLPS * enc.mlp_dim
                          + BLOCK_SCORES * enc.num_heads * length)
        kept = length * enc.width * enc.depth + block if cfg.model.remat else block * enc.depth
        encoders[f"encoders_{m}"] = local * kept * itemsize
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


# ---- The plan.


def plan(cfg: Config, shapes: InputShapes, method: str = "all",
         include_mlm: bool = False) -> dict:
    """Parameters and training FLOPs per module of cfg.model on cfg.data.modalities."""
    modalities = tuple(cfg.data.modalities)
    _check_transformer_encoders(cfg.model, modalities)
    return {
        "name": cfg.name,
        "modalities": modalities,
        "method": method,
        "include_mlm": include_mlm,
        "shapes": shapes,
        "tokens": {m: token_counts(cfg.model, shapes, m)[0] for m in modalities},
        "params": count_params(cfg.model, shapes, modalities, method),
        "flops": flops_per_example(cfg.model, shapes, modalities, method, include_mlm),
    }


def _si(count: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix}"
    return f"{count:.0f}"


def format_plan(result: dict) -> str:
    """A table of `plan`'s result: params and training GFLOPs per example per module."""
    params, flops = result["params"], result["flops"]
    modules = [m for m in flops if m != "total"]
    modules += [m for m in params if m not in flops and m != "total"]
    tokens = ", ".join(f"{m} {n}" for m, n in result["tokens"].items())
    mlm = "counted" if result["include_mlm"] else "not counted"
    lines = [
        f"plan {result['name']}: method {result['method']}, MLM head {mlm}",
        f"encoder tokens per example (CLS included): {tokens}; "
        f"vocab {result['shapes'].vocab_size}",
        "",
        f"{'module':<18}{'params':>10}{'share':>8}{'train GFLOP/ex':>16}{'share':>8}"
        f"{'attention':>11}",
    ]
    total_params, total_flops = params["total"], flops["total"].total
    for name in [*modules, "total"]:
        count, f = params.get(name, 0), flops.get(name, Flops())
        lines.append(
            f"{name:<18}{_si(count):>10}{count / max(total_params, 1):>8.1%}"
            f"{f.total / 1e9:>16.4f}{f.total / max(total_flops, 1):>8.1%}"
            f"{f.attention / max(f.total, 1):>11.1%}")
    lines.insert(-1, "-" * len(lines[3]))
    return "\n".join([*lines, "", MFU_NOTE])
