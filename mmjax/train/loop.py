"""The training run, top to bottom: workdir, input, model, shard, warm start, resume,
compile, loop (logs, checkpoints, SIGTERM), evals."""

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from mmjax import config as config_lib
from mmjax import storage
from mmjax.data import pipeline
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.eval import registry
from mmjax.eval.context import EvalContext
from mmjax.nn.model import MultimodalModel, has_patches, uses_batch_norm
from mmjax.objectives.supervised import positive_weights
from mmjax.parallel import rules
from mmjax.parallel.mesh import batch_sharding, check_divisible, make_mesh, replicated
from mmjax.train import state as state_lib
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.guard import NonfiniteGuard
from mmjax.train.losses import LOG_VARIANCES, Objectives
from mmjax.train.metrics import MetricsLog, Throughput, compiled_step_flops, peak_flops
from mmjax.train.optim import learning_rate_schedule, make_optimizer
from mmjax.train.step import (
    PMAP_AXIS,
    StepBuilder,
    as_float32,
    model_variables,
    split_params,
    variable_shardings,
)
from mmjax.train.warm_start import warm_start

# Keys that fix the checkpoint's shapes or the meaning of its inputs; a workdir keeps them.
FROZEN_KEYS = ("model.", "data.path", "data.modalities", "data.max_text_len", "data.tokenizer",
               "objectives.weighting", "parallel.strategy")
STRATEGIES = ("mesh", "pmap")

log = logging.getLogger(__name__)


def prepare_workdir(cfg: config_lib.Config, workdir: Path) -> None:
    """Creates the workdir, refuses to resume under a different model or data config,
    and records the resolved config."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    if path.exists():
        changed = [
            key
            for key in config_lib.differences(config_lib.read(path), cfg)
            if key.startswith(FROZEN_KEYS)
        ]
        if changed:
            raise config_lib.ConfigError(
                f"workdir {workdir} was trained with a different config for "
                f"{', '.join(changed)}; use a new --workdir"
            )
    if jax.process_index() == 0:  # the workdir is shared by every process of a job
        config_lib.save(cfg, path)


@dataclasses.dataclass
class Input:
    """The training split as per-host batches; batch s is a pure function of (seed, s)."""

    tokenizer: object
    transform: pipeline.ExampleTransform
    batches: object  # grain MapDataset
    label_names: tuple[str, ...]
    label_prevalence: np.ndarray | None


def open_input(cfg: config_lib.Config) -> Input:
    tokenizer = pipeline.load_tokenizer(cfg.data)
    source, transform = pipeline.open_split(cfg.data, cfg.data.train_split, tokenizer)
    batches = pipeline.train_batches(
        source, transform, cfg.train.batch_size // jax.process_count(), cfg.train.seed,
        jax.process_index(), jax.process_count(), cfg.data.train_fraction,
    )
    manifest = source.manifest
    prevalence = manifest.attributes.get("label_prevalence", {}).get(cfg.data.train_split)
    return Input(tokenizer, transform, batches, tuple(manifest.label_names),
                 None if prevalence is None else np.asarray(prevalence, np.float32))


@dataclasses.dataclass
class Run:
    """What the loop needs: the model, its sharded state and the (uncompiled) step."""

    mesh: jax.sharding.Mesh
    model: MultimodalModel
    objectives: Objectives
    schedule: optax.Schedule
    state: state_lib.TrainState  # pmap: replicated over the leading device axis
    param_shardings: object
    train_step: Callable
    to_device: Callable  # per-host numpy batch -> what train_step takes
    strategy: str
    local_devices: list  # pmap: the devices holding a replica

    def host_state(self) -> state_lib.TrainState:
        """The state as one copy (pmap keeps one per device)."""
        if self.strategy == "pmap":
            return jax.tree.map(lambda x: x[0], self.state)
        return self.state


def _replicate(tree, devices):
    """pmap's layout: a leading axis with one copy per device."""
    sharding = NamedSharding(Mesh(np.asarray(devices), ("replica",)), PartitionSpec("replica"))
    return jax.tree.map(
        lambda x: jax.device_put(np.repeat(np.asarray(x)[None], len(devices), 0), sharding),
        jax.device_get(tree))


def define_model(cfg: config_lib.Config, tokenizer, example_batch: dict, num_labels: int,
                 mesh: Mesh, label_prevalence=None, audio_rate_hz: float | None = None):
    """(model, objectives, init_variables(batch), param_shardings, param_shapes): what the
    parameters are (ShapeDtypeStructs) and where the rules put each, before any is
    created."""
    special = tokenizer_lib.special_ids(tokenizer)
    weights = (tuple(float(w) for w in positive_weights(label_prevalence))
               if cfg.objectives.class_weights and label_prevalence is not None else None)
    if cfg.objectives.class_weights and weights is None:
        raise config_lib.ConfigError("objectives.class_weights needs the dataset's label "
                                     "prevalence, which its manifest lacks")
    objectives = Objectives(cfg.objectives, tuple(cfg.data.modalities),
                            tokenizer.get_vocab_size(), special["[MASK]"],
                            tuple(special.values()), num_labels, weights)
    if cfg.objectives.mae:
        for modality in cfg.objectives.mae_modalities:
            if not has_patches(cfg.model, modality):
                raise config_lib.ConfigError(
                    f"objectives.mae_modalities: '{modality}' has no patch encoder to mask "
                    "(MAE needs model.image_encoder=vit, model.video.encoder=tubelet or the "
                    "signal encoder)")
    if cfg.parallel.strategy == "mesh" and cfg.train.accumulation_steps > 1 and \
            uses_batch_norm(cfg.model, cfg.data.modalities):
        raise config_lib.ConfigError(
            "train.accumulation_steps > 1 with BatchNorm (model.cnn.norm=batch): statistics "
            "over micro-batches would differ from the whole batch's; use model.cnn.norm=group")
    model = MultimodalModel(cfg.model, tokenizer.get_vocab_size(), tuple(cfg.data.modalities),
                            num_labels, audio_rate_hz or 0.0,
                            PMAP_AXIS if cfg.parallel.strategy == "pmap" else None)

    def init_variables(batch):
        rng = jax.random.key(cfg.train.seed)
        return model.init(rng, batch, rng, method=objectives.forward)

    # Outside the sharding context: flax would constrain boxed kernels mid-init.
    abstract = jax.eval_shape(init_variables, example_batch)
    return (model, objectives, init_variables, rules.param_shardings(mesh, abstract["params"]),
            nn.meta.unbox(abstract["params"]))


def build(cfg: config_lib.Config, tokenizer, example_batch: dict, num_labels: int,
          devices=None, label_prevalence=None, audio_rate_hz: float | None = None) -> Run:
    """Mesh, model, objectives, optimizer, initialised sharded state and train step."""
    strategy = cfg.parallel.strategy
    if strategy not in STRATEGIES:
        raise config_lib.ConfigError(f"parallel.strategy '{strategy}' is unknown; choose from "
                                     f"{', '.join(STRATEGIES)}")
    if strategy == "pmap" and cfg.train.accumulation_steps > 1:
        raise config_lib.ConfigError("train.accumulation_steps > 1 needs parallel.strategy=mesh")
    if cfg.objectives.matching and cfg.model.fusion.kind == "late":
        raise config_lib.ConfigError(
            "objectives.matching needs model.fusion.kind=early or hybrid: the late-fused "
            "vector (a mean of embeddings) cannot express whether two embeddings agree")
    mesh = make_mesh(cfg.parallel, devices)
    check_divisible(cfg.train.batch_size // max(cfg.train.accumulation_steps, 1), mesh,
                    "train.batch_size / train.accumulation_steps")
    check_divisible(cfg.eval.batch_size, mesh, "eval.batch_size")
    model, objectives, init_variables, param_shardings, _ = define_model(
        cfg, tokenizer, example_batch, num_labels, mesh, label_prevalence, audio_rate_hz)
    log_variances = objectives.init_log_variances()
    if log_variances is not None:
        param_shardings = {**param_shardings,
                           LOG_VARIANCES: {k: replicated(mesh) for k in log_variances}}

    def init_model(batch):
        variables = init_variables(batch)
        return nn.meta.unbox(variables["params"]), variables.get("batch_stats", {})

    params, batch_stats = jax.jit(init_model, out_shardings=(
        split_params(param_shardings)[0], replicated(mesh)))(example_batch)
    if log_variances is not None:
        params = {**params, LOG_VARIANCES: log_variances}
    params, batch_stats = warm_start(params, batch_stats, cfg.init, cfg.model.text)

    num_steps = cfg.train.num_steps
    schedule = learning_rate_schedule(cfg.optim, num_steps)
    tx = make_optimizer(cfg.optim, num_steps, params)
    opt_shardings = rules.like_params(jax.eval_shape(tx.init, params), params,
                                      param_shardings, mesh)
    state_shardings = state_lib.TrainState(replicated(mesh), param_shardings, opt_shardings,
                                           replicated(mesh), replicated(mesh))
    state = jax.jit(lambda p, s: state_lib.create(p, tx, cfg.train.seed, s),
                    out_shardings=state_shardings)(params, batch_stats)

    builder = StepBuilder(model, objectives, tx, schedule)
    local = jax.local_devices() if devices is None else list(mesh.devices.flat)
    if strategy == "pmap":
        state = _replicate(state, local)

        def to_device(batch):
            return jax.tree.map(lambda x: x.reshape(len(local), -1, *x.shape[1:]), batch)

        train_step = builder.pmap_step()
    else:
        def to_device(batch):
            return jax.make_array_from_process_local_data(batch_sharding(mesh), batch)

        with rules.sharding_context(mesh):
            train_step = builder.mesh_step(mesh, state_shardings, cfg.train.accumulation_steps)
    return Run(mesh, model, objectives, schedule, state, param_shardings, train_step,
               to_device, strategy, local)


class _Preemption:
    """Notes SIGTERM (preemption, scancel, Ctrl-\\) so the loop can checkpoint and stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self) -> bool:
        """True on every host once any host was asked to stop, so all save together."""
        if jax.process_count() == 1:
            return self.requested
        return bool(np.any(multihost_utils.process_allgather(np.bool_(self.requested))))


def compile_step(run: Run, example_batch):
    """AOT-compiles the step so step timings exclude compilation; returns the compiled
    step and its FLOPs per device (None when XLA does not say)."""
    start = time.perf_counter()
    if run.strategy == "pmap":  # pmap has no AOT path worth the complexity; warm-up below
        return run.train_step, None
    with rules.sharding_context(run.mesh):
        compiled = run.train_step.lower(run.state, example_batch).compile()
    log.info("train step compiled in %.1f s", time.perf_counter() - start)
    return compiled, compiled_step_flops(compiled)


def train(
    cfg: config_lib.Config,
    workdir: str | Path,
    devices=None,
    progress: bool = True,
    stop_at: int | None = None,
    evaluate: bool = True,
):
    """Trains (or resumes) to cfg.train.num_steps, evaluating on the way and at the end.

    `stop_at` ends this invocation after that step with a checkpoint and no eval, for
    jobs that must fit a time slot; SIGTERM does the same at the next step. Rerunning
    continues exactly where it stopped. `evaluate=False` skips the held-out evals.
    Evaluators (eval.evaluators) run every eval.every steps and after the last one.
    Returns a dict with the step, the last logged metrics, the final evals' metrics by
    evaluator (None when stopped early or not evaluated), whether it was preempted, and
    the state.
    """
    workdir = storage.path(workdir, "--workdir")
    storage.path(cfg.data.path, "data.path")
    evaluators = registry.resolve(cfg) if evaluate else []  # a bad name fails before work
    prepare_workdir(cfg, workdir)

    # ---- Input, then everything that depends on the model.
    data = open_input(cfg)
    first = data.batches[0]
    run = build(cfg, data.tokenizer, first, len(data.label_names), devices,
                data.label_prevalence, data.transform.audio_rate_hz)

    # ---- Resume from the newest complete checkpoint, if any (it wins over init.from).
    checkpointer = Checkpointer(workdir / "checkpoints", cfg.train.checkpoint_every,
                                cfg.train.max_checkpoints, cfg.train.keep_checkpoint_every)
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(run.host_state())
        run.state = (_replicate(restored, run.local_devices) if run.strategy == "pmap"
                     else restored)
        log.info("resumed from step %d of %s", int(run.host_state().step), workdir)
    start = int(run.host_state().step)
    num_steps = cfg.train.num_steps
    end = num_steps if stop_at is None else min(stop_at, num_steps)

    train_step, step_flops = compile_step(run, run.to_device(first))
    peak = peak_flops(run.mesh.devices.flat[0].device_kind, cfg.train.peak_tflops)

    # ---- Evals.
    is_writer = jax.process_index() == 0
    metrics_log = MetricsLog(workdir / "metrics.jsonl",
                             workdir / "tensorboard" if cfg.train.tensorboard and is_writer
                             else None, resume_from=start if is_writer else None)
    evals = None
    shardings = variable_shardings(run.param_shardings, run.mesh,
                                   bool(run.host_state().batch_stats))
    eval_context = EvalContext(cfg, run.model, None, shardings, run.mesh, data.tokenizer,
                               data.label_names, start, workdir / "eval" if is_writer else None)

    def run_evals(step: int) -> dict:
        state = run.host_state()
        variables = model_variables(state.params, state.batch_stats)
        ctx = eval_context.at(jax.device_put(variables, shardings), step)
        results = registry.run_all(ctx, evaluators)
        if is_writer:
            metrics_log.write(step, registry.scalars(results))
        return results

    # ---- Loop.
    throughput = Throughput()
    guard = NonfiniteGuard(cfg.train.max_nonfinite_steps, run.strategy == "pmap")
    last_metrics, preempted = {}, False
    inputs = pipeline.iterate(data.batches, start, cfg.data.workers)
    data_wait = 0.0
    with (tqdm(total=num_steps, initial=start, desc="train",
               disable=not (progress and is_writer)) as bar,
          _Preemption() as preemption,
          contextlib.closing(checkpointer)):  # even when a step fails: the write in flight
        for step in range(start, end):
            wait_start = time.perf_counter()
            batch = run.to_device(next(inputs))
            data_wait += time.perf_counter() - wait_start
            run.state, metrics = train_step(run.state, batch)
            throughput.add(cfg.train.batch_size)
            done = step + 1
            guard.add(done, metrics["nonfinite"])
            # Several hosts agree through a collective, so only on steps all of them log.
            if jax.process_count() == 1 or done % cfg.train.log_every == 0:
                preempted = preemption.agreed()
            if done % cfg.train.log_every == 0 or done == num_steps:
                if run.strategy == "pmap":
                    metrics = jax.tree.map(lambda x: x[0], metrics)
                last_metrics = as_float32(metrics)
                last_metrics["skipped_steps"] = guard.skipped
                elapsed = throughput.elapsed()
                last_metrics["examples_per_sec"], step_time = throughput.measure()
                last_metrics["data_wait_fraction"] = min(data_wait / elapsed, 1.0)
                if step_flops and peak:
                    last_metrics["mfu"] = step_flops / step_time / peak
                data_wait = 0.0
                if is_writer:
                    metrics_log.write(done, last_metrics)
                bar.set_postfix(loss=f"{last_metrics['loss']:.3f}",
                                ex_per_s=f"{last_metrics['examples_per_sec']:.0f}")
            if checkpointer.maybe_save(run.host_state(), done, final=done == end or preempted):
                metrics_log.flush()
            if evaluators and cfg.eval.every and done % cfg.eval.every == 0:
                results = run_evals(done)
                evals = results if done == num_steps else None
                throughput.reset()  # examples/s should not count the evals
            bar.update(1)
            if preempted:
                log.warning("SIGTERM: saved the checkpoint of step %d; rerun to resume", done)
                end = done
                break
        guard.flush()
    if evaluators and end == num_steps and evals is None:
        evals = run_evals(end)
    metrics_log.close()
    return {"step": end, "metrics": last_metrics, "evals": evals, "state": run.host_state(),
            "preempted": preempted}
