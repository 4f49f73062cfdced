"""The training run, top to bottom: workdir, input, model, state, resume, compile, then
a loop of steps with hooks (guard, preemption, metrics, checkpoints, evals)."""

import contextlib
import logging
import time
from pathlib import Path

import jax
from tqdm import tqdm

from mmjax import config as config_lib
from mmjax import storage
from mmjax.data import pipeline
from mmjax.eval import registry
from mmjax.eval.context import EvalContext
from mmjax.nn.build import model_variables, variable_shardings
from mmjax.train import hooks as hooks_lib
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.failures import TrainingDiverged
from mmjax.train.guard import NonfiniteGuard
from mmjax.train.lock import WorkdirLock
from mmjax.train.metrics import MetricsLog, peak_flops
from mmjax.train.setup import Run, build, open_input, prepare_workdir

log = logging.getLogger(__name__)


def _resume(run: Run, checkpointer: Checkpointer, workdir: Path) -> int:
    """Restores the newest complete checkpoint, if any (it wins over init.from)."""
    if checkpointer.latest_step() is not None:
        run.state = run.strategy.place(checkpointer.restore(run.host_state()))
        log.info("resumed from step %d of %s", int(run.host_state().step), workdir)
    return int(run.host_state().step)


def _evaluator(cfg, run: Run, data, start: int, workdir: Path, is_writer: bool):
    """evaluate(eval runs, step) -> (results by name, scalars for metrics.jsonl)."""
    shardings = variable_shardings(run.param_shardings, run.mesh,
                                   bool(run.host_state().batch_stats))
    context = EvalContext(cfg, run.definition.module, None, shardings, run.mesh,
                          data.tokenizer, data.label_names, start,
                          workdir / "eval" if is_writer else None)

    def evaluate(runs, step: int):
        state = run.host_state()
        variables = model_variables(state.params, state.batch_stats)
        results = registry.run_all(context.at(jax.device_put(variables, shardings), step),
                                   runs)
        return results, registry.scalars(results)

    return evaluate


def _hooks(cfg, run: Run, evaluate, eval_runs, checkpointer, metrics_log, bar, flops):
    writer_log = metrics_log if jax.process_index() == 0 else None
    hooks = [
        hooks_lib.GuardHook(NonfiniteGuard(cfg.train.max_nonfinite_steps), run.strategy.host),
        hooks_lib.Preemption(cfg.train.log_every),
        hooks_lib.MetricsHook(cfg.train.log_every, writer_log, run.strategy.host, bar, *flops,
                              lines=writer_log is not None and bar.disable),
        hooks_lib.CheckpointHook(checkpointer, metrics_log, run.strategy.host),
    ]
    if eval_runs:
        hooks.append(hooks_lib.EvalHook(eval_runs, evaluate, writer_log))
    return [*hooks, hooks_lib.ProgressHook(bar)]


def _steps(loop: hooks_lib.Loop, hooks: list, run: Run, train_step, inputs,
           batch_size: int) -> None:
    """Steps until the loop's end or a hook's stop, calling every hook after each step and
    closing them all however it ends (a checkpoint write in flight is finished)."""
    with contextlib.ExitStack() as stack:
        for hook in reversed(hooks):
            stack.callback(hook.close, loop)
        while loop.step < loop.end and not loop.stop:
            wait_start = time.perf_counter()
            batch = run.to_device(next(inputs))
            loop.data_wait += time.perf_counter() - wait_start
            run.state, loop.metrics = train_step(run.state, batch)
            loop.throughput.add(batch_size)
            loop.step += 1
            for hook in hooks:
                hook.after_step(loop)


def train(cfg: config_lib.Config, workdir: str | Path, devices=None, progress: bool = True,
          stop_at: int | None = None, evaluate: bool = True):
    """Trains (or resumes) to cfg.train.num_steps, evaluating on the way and at the end.

    `stop_at` ends this invocation after that step with a checkpoint and no eval, for
    jobs that must fit a time slot; SIGTERM and SIGINT (Ctrl-C) do the same at the next
    step. Rerunning continues exactly where it stopped. `evaluate=False` skips the
    held-out evals.
    Each evaluator runs on its own schedule and after the last step. Returns a dict with
    the step, the last logged metrics, the final evals' metrics by evaluator (None when
    stopped early or not evaluated), whether a signal stopped it and which, the newest
    checkpointed step, and the state.
    """
    config_lib.validate(cfg)
    cfg = config_lib.absolute_paths(cfg)
    workdir = storage.path(workdir, "--workdir")
    storage.path(cfg.data.path, "data.path")
    eval_runs = registry.resolve(cfg) if evaluate else []
    # Process 0 holds the lock for the job; a bucket has no atomic create to lock with.
    lock = (WorkdirLock(workdir).acquire()
            if jax.process_index() == 0 and not storage.is_bucket(workdir) else None)
    try:
        return _train(cfg, workdir, devices, progress, stop_at, eval_runs, lock)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, workdir: Path, devices, progress: bool, stop_at, eval_runs, lock):
    # ---- Input (opening it writes nothing), the workdir, model, state.
    data = open_input(cfg)
    prepare_workdir(cfg, workdir, data.tokenizer)
    first = data.batches[0]
    run = build(cfg, data.define_model(cfg), first, devices)

    # ---- Resume, compile.
    checkpointer = Checkpointer(workdir / "checkpoints", cfg.train.checkpoint_every,
                                cfg.train.max_checkpoints, cfg.train.keep_checkpoint_every)
    start = _resume(run, checkpointer, workdir)
    if start > cfg.train.num_steps:
        raise config_lib.ConfigError(
            f"workdir {workdir} is at step {start}, past train.num_steps="
            f"{cfg.train.num_steps}; raise it, or use a new --workdir")
    checkpointer.protect(start if start else None)
    num_steps = cfg.train.num_steps
    end = num_steps if stop_at is None else min(stop_at, num_steps)
    train_step, step_flops = run.compile(run.to_device(first))
    peak = peak_flops(run.mesh.devices.flat[0].device_kind, cfg.train.peak_tflops)

    # ---- Hooks.
    is_writer = jax.process_index() == 0
    metrics_log = MetricsLog(workdir / "metrics.jsonl",
                             workdir / "tensorboard" if cfg.train.tensorboard and is_writer
                             else None, resume_from=start if is_writer else None)
    evaluator = _evaluator(cfg, run, data, start, workdir, is_writer)
    # No bar without a terminal (tqdm's None): log lines instead, readable in any log file.
    bar = tqdm(total=num_steps, initial=start, desc="train",
               disable=None if progress and is_writer else True)
    hooks = _hooks(cfg, run, evaluator, eval_runs, checkpointer, metrics_log, bar,
                   (step_flops, peak))
    if lock is not None:
        hooks.insert(0, hooks_lib.LockRefresh(lock))
    loop = hooks_lib.Loop(start, end, num_steps, run.host_state, saved=start or None)

    # ---- Loop.
    try:
        _steps(loop, hooks, run, train_step,
               pipeline.iterate(data.batches, start, cfg.data.workers), cfg.train.batch_size)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"{e} {checkpointer.intact()}") from None
    if eval_runs and loop.step == num_steps and loop.evals is None:  # resumed when done
        loop.evals = evaluator(eval_runs, num_steps)[0]
    metrics_log.close()
    return {"step": loop.step, "metrics": loop.logged, "evals": loop.evals,
            "state": run.host_state(), "preempted": loop.stop, "signal": loop.stopped_by,
            "saved_step": loop.saved}
