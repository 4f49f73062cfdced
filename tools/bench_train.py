"""Train-step benchmark: mmjax against open_clip on the same CLIP, the same batch, this CPU.

Why: a framework is only worth its abstractions if its step is as fast as the reference
implementation's. For each config this times mmjax's jitted train step and open_clip's
eager PyTorch step (forward, ClipLoss, backward, grad clip, AdamW) on identical two-tower
architectures and synthetic batches, reports MFU against the analytic training FLOPs of
mmjax.plan (3 x forward matmuls) and the ratio open_clip / mmjax (>1: mmjax is faster).
The two take turns in blocks of steps, so load from other processes slows both alike.

    .venv/bin/python tools/bench_train.py [--configs tiny,small] [--steps 20] [--no-torch]

open_clip is optional; without it only the mmjax half runs. Install it without its
torchvision/timm dependencies, which its model code does not use:
    .venv/bin/pip install torch==2.13.0 ftfy regex
    .venv/bin/pip install --no-deps open_clip_torch==3.3.0

Measured 2026-11-29 on the 2 cores of a shared Xeon (AVX-512) with
jax 0.10.2, torch 2.13.0+cpu and open_clip 3.3.0, one run per config (`--configs tiny`,
`--configs small`) while no other process ran; measured peaks 227 and 242 GFLOP/s:

    config framework       params  step ms   ex/s    MFU  GFLOP/step  oc/mmjax
    tiny   mmjax          488,674    227.0    564  25.7%        13.2      0.72
    tiny   open_clip      488,673    164.1    780  35.5%        13.2
    small  mmjax        6,761,986   1233.6     52  54.5%       162.8      0.79
    small  open_clip    6,761,985    974.9     66  68.9%       162.8

Why mmjax is 20-30% slower on this CPU: (1) attention scores. XLA:CPU runs the batched
[64 x 24] @ [24 x 64] matmuls of jax.nn.dot_product_attention at ~14 GFLOP/s; stubbing
them out saves ~110 of mmjax's ~240 ms on tiny but only ~70 of open_clip's ~175 (torch has
a fused CPU flash-attention kernel). (2) Page faults: XLA:CPU maps fresh memory for its
buffers every step (67k minor faults on tiny, 257k on small: 16-28% of the CPU time in the
kernel); GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge pages) removes almost all
of them and 7-12% of the step. Under load from other processes torch's spinning OpenMP
threads slow open_clip up to 10x, so the bench reports the share other processes took.
"""

import argparse
import dataclasses
import enum
import os
import statistics
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np

from mmjax import config as config_lib
from mmjax import plan
from mmjax.nn import build as model_build
from mmjax.nn.transformer import BlockOptions
from mmjax.objectives.compose import Vocab
from mmjax.parallel.mesh import batch_sharding, make_mesh, replicated
from mmjax.train import state as state_lib
from mmjax.train.optim import learning_rate_schedule, make_optimizer
from mmjax.train.step import StepBuilder

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "report")
CORES = len(os.sched_getaffinity(0))


@dataclasses.dataclass
class Bench:
    model: config_lib.ModelConfig
    shapes: plan.InputShapes
    batch_size: int


def configs() -> dict[str, Bench]:
    """tiny: experiments/tiny_cpu.py on the demo's data (32 px single-channel images, 64
    tokens, its 274-token tokenizer). small: 4-layer 256-wide towers on 64 px images."""
    tiny = config_lib.load(REPO / "experiments" / "tiny_cpu.py")
    small = config_lib.ModelConfig(embed_dim=256)
    small.image = config_lib.ViTConfig(patch_size=8, width=256, depth=4, num_heads=4,
                                       mlp_dim=1024)
    small.text = config_lib.TextConfig(width=256, depth=4, num_heads=4, mlp_dim=1024)
    tiny_shapes = plan.InputShapes(image_size=32, channels=1, vocab_size=274,
                                   text_len=tiny.data.max_text_len)
    small_shapes = plan.InputShapes(image_size=64, channels=1, text_len=64, vocab_size=1024)
    return {"tiny": Bench(tiny.model, tiny_shapes, tiny.train.batch_size),
            "small": Bench(small, small_shapes, 64)}


def synthetic_batch(shapes: plan.InputShapes, batch_size: int, seed: int = 0) -> dict:
    """Standardised-looking images and random token ids with every token present."""
    rng = np.random.default_rng(seed)
    batch = plan.example_batch(shapes, MODALITIES, batch_size)
    batch["image"] = rng.standard_normal(batch["image"].shape, np.float32)
    batch["text"] = rng.integers(0, shapes.vocab_size, batch["text"].shape, np.int32)
    batch["text_truncated"] = np.zeros(batch_size, bool)
    return batch


def mmjax_train_step(bench: Bench, num_steps: int):
    """The one place that builds mmjax training through its public API (model, contrastive
    objective, optimizer, state, mesh step, compiled ahead of time and not timed).
    Returns a blocking step()."""
    cfg = config_lib.Config(model=bench.model)
    cfg.data.modalities = MODALITIES
    definition = model_build.define(cfg, Vocab(bench.shapes.vocab_size), num_labels=0)
    mesh = make_mesh(cfg.parallel)
    batch = jax.device_put(synthetic_batch(bench.shapes, bench.batch_size),
                           batch_sharding(mesh))
    params, _ = definition.init(batch, definition.parameters(batch, mesh), mesh)
    tx = make_optimizer(cfg.optim, num_steps, params)
    state = state_lib.create(params, tx, seed=0)
    schedule = learning_rate_schedule(cfg.optim, num_steps)
    train_step = StepBuilder(definition, tx, schedule).mesh_step(mesh, replicated(mesh))
    train_step = train_step.lower(state, batch).compile()

    def step():
        nonlocal state
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)

    return step


def import_open_clip():
    """open_clip, or None with the reason printed. Its package __init__ imports
    torchvision (preprocessing transforms, FrozenBatchNorm2d for ResNet towers) which the
    ViT CLIP never calls, so without torchvision a stand-in module with just the names
    imported at module level goes into sys.modules."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: skipping open_clip (pip install torch open_clip_torch)")
        return None
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = {name: types.ModuleType(name) for name in (
            "torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
            "torchvision.transforms.functional")}
        transforms = stub["torchvision.transforms"]
        for name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize",
                     "CenterCrop", "ColorJitter", "Grayscale"):
            setattr(transforms, name, type(name, (), {}))
        transforms.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
        stub["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
        for name, module in stub.items():  # parents know their children as attributes
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(stub[parent], child, module)
        sys.modules.update(stub)
    try:
        import open_clip
    except ImportError as e:
        print(f"open_clip is not importable ({e}): skipping it (pip install open_clip_torch)")
        return None
    return open_clip


OPEN_CLIP_NOTE = """\
open_clip matches mmjax in: pre-norm blocks, tanh GELU, LayerNorm eps, no ln_pre, image
CLS pooling after the final LayerNorm, bidirectional text attention, bias-free projections,
AdamW decaying matrices only, global-norm clipping. It differs in: text pooling (the argmax
token; mmjax: masked mean), no key-padding mask (mmjax passes an all-True one), a bias-free
patch conv, a position for the CLS token, no logit bias, a constant learning rate, eager
execution (no torch.compile)."""


def open_clip_train_step(open_clip, bench: Bench):
    """(blocking step(), parameter count) of open_clip's CLIP trained as its
    training/train.py does on CPU (fp32, no AMP)."""
    import torch

    torch.set_num_threads(CORES)
    torch.manual_seed(0)
    m, s = bench.model, bench.shapes
    act = {"approximate": "tanh"}  # mmjax's GELU (text.activation 'gelu_tanh')
    # open_clip truncates width * mlp_ratio to an int; the +0.5 makes that mlp_dim exactly.
    vision = open_clip.CLIPVisionCfg(
        layers=m.image.depth, width=m.image.width, head_width=m.image.width // m.image.num_heads,
        mlp_ratio=(m.image.mlp_dim + 0.5) / m.image.width, patch_size=m.image.patch_size,
        image_size=s.image_size, no_ln_pre=True, pool_type="tok", act_kwargs=act,
        norm_kwargs={"eps": BlockOptions().eps})
    text = open_clip.CLIPTextCfg(
        context_length=s.text_len, vocab_size=s.vocab_size, width=m.text.width,
        heads=m.text.num_heads, layers=m.text.depth,
        mlp_ratio=(m.text.mlp_dim + 0.5) / m.text.width, no_causal_mask=True,
        act_kwargs=act, norm_kwargs={"eps": m.text.layer_norm_eps})
    model = open_clip.CLIP(m.embed_dim, vision_cfg=vision, text_cfg=text).train()
    # open_clip hard-codes 3 input channels; its stem is a patch-sized strided conv.
    model.visual.conv1 = torch.nn.Conv2d(s.channels, m.image.width, m.image.patch_size,
                                         m.image.patch_size, bias=False)
    o = config_lib.OptimConfig()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=o.learning_rate, betas=(o.b1, o.b2))
    loss_fn = open_clip.ClipLoss()
    batch = synthetic_batch(s, bench.batch_size)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
    tokens = torch.from_numpy(batch["text"]).long()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(*model(images, tokens))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip_norm)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))

    return step, sum(p.numel() for p in params)


def median_seconds(steps: dict, warmup: int, count: int, rounds: int = 2) -> dict:
    """Median seconds per call of each blocking step(). The steps take turns in `rounds`
    blocks, each warmed up again, so a change in load from other processes hits all."""
    times = {name: [] for name in steps}
    for i in range(rounds):
        for name, step in steps.items():
            for j in range(warmup + count // rounds + (i < count % rounds)):
                start = time.perf_counter()
                step()
                if j >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measured_peak_flops(size: int = 3072, repeats: int = 5) -> float:
    """Achieved FLOP/s of a float32 [size]^3 matmul in jax (median): a practical peak, far
    below the nominal one but what XLA's best kernel reaches on this CPU."""
    x = jax.random.normal(jax.random.key(0), (size, size))
    matmul = jax.jit(lambda a: a @ a)
    return 2 * size**3 / median_seconds({"mm": lambda: matmul(x).block_until_ready()},
                                        1, repeats, rounds=1)["mm"]


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # not idle/iowait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per block")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = each config's own")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="peak FLOP/s for MFU; 0 = measure a float32 matmul in jax")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    benches, names = configs(), args.configs.split(",")
    if unknown := set(names) - set(benches):
        parser.error(f"unknown configs {sorted(unknown)}; choose from {', '.join(benches)}")
    open_clip = None if args.no_torch else import_open_clip()
    if args.peak_tflops:
        peak, source = args.peak_tflops * 1e12, "--peak-tflops"
    else:
        peak, source = measured_peak_flops(), "measured: 3072^3 float32 matmul in jax"
    versions = f"jax {jax.__version__}"
    if open_clip:
        import torch
        versions += f", torch {torch.__version__}, open_clip {open_clip.__version__}"
    print(f"{versions}; {CORES} cores; peak {peak / 1e9:.0f} GFLOP/s ({source})")
    start_busy, start_own, start = busy_cpu_seconds(), time.process_time(), time.time()

    rows = [f"{'config':<7}{'framework':<11}{'params':>11}{'step ms':>9}{'ex/s':>7}{'MFU':>7}"
            f"{'GFLOP/step':>12}{'oc/mmjax':>10}"]
    for name in names:
        bench = benches[name]
        if args.batch_size:
            bench = dataclasses.replace(bench, batch_size=args.batch_size)
        print(f"{name}: batch {bench.batch_size}, {bench.shapes}", flush=True)
        steps = {"mmjax": mmjax_train_step(bench, args.warmup + args.steps)}
        cfg = config_lib.Config(model=bench.model, data=config_lib.DataConfig(
            modalities=MODALITIES))  # contrastive only, as mmjax_train_step trains
        params = {"mmjax": plan.count_params(cfg, bench.shapes)["total"]}
        if open_clip:
            steps["open_clip"], params["open_clip"] = open_clip_train_step(open_clip, bench)
            if abs(params["open_clip"] / params["mmjax"] - 1) > 0.03:
                print(f"warning: {name}: parameter counts differ by more than 3%")
        seconds = median_seconds(steps, args.warmup, args.steps)
        flops = bench.batch_size * plan.flops_per_example(cfg, bench.shapes)["total"].total
        for framework, s in seconds.items():
            ratio = (f"{seconds['open_clip'] / s:>10.2f}"
                     if framework == "mmjax" and "open_clip" in seconds else "")
            rows.append(f"{name:<7}{framework:<11}{params[framework]:>11,}"
                        f"{s * 1e3:>9.1f}{bench.batch_size / s:>7.0f}{flops / s / peak:>7.1%}"
                        f"{flops / 1e9:>12.1f}{ratio}")
    others = max(0.0, busy_cpu_seconds() - start_busy - (time.process_time() - start_own)) / (
        (time.time() - start) * CORES)
    print("\n".join(["", *rows, "", f"median of {args.steps} steps, in 2 blocks after "
                     f"{args.warmup} warm-up steps each; oc/mmjax = open_clip step time / "
                     f"mmjax step time. Other processes used {others:.0%} of the cores."]))
    if others > 0.05:
        print("warning: the timings are unreliable with other work on the cores (torch's "
              "OpenMP threads, which spin at barriers, suffer most)")
    if open_clip:
        print(OPEN_CLIP_NOTE)
    print(plan.MFU_NOTE)


if __name__ == "__main__":
    main()
