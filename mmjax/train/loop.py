"""The training run, top to bottom: workdir, mesh, input, model, shard, resume, loop, evals."""

import json
import logging
import time
from pathlib import Path

import jax
from tqdm import tqdm

from mmjax import config as config_lib
from mmjax.data import pipeline
from mmjax.eval.embed import embed_pairs
from mmjax.eval.retrieval import retrieval_metrics
from mmjax.nn.model import MultimodalModel
from mmjax.parallel.mesh import batch_sharding, check_divisible, make_mesh, replicated
from mmjax.train import state as state_lib
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.metrics import MetricsLog, Throughput
from mmjax.train.optim import learning_rate_schedule, make_optimizer
from mmjax.train.step import as_float32, make_embed_fns, make_train_step

# Keys that fix the checkpoint's shapes or the meaning of its inputs; a workdir keeps them.
FROZEN_KEYS = ("model.", "data.path", "data.modalities", "data.max_text_len", "data.tokenizer")

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
    config_lib.save(cfg, path)


def train(
    cfg: config_lib.Config,
    workdir: str | Path,
    devices=None,
    progress: bool = True,
    stop_at: int | None = None,
):
    """Trains (or resumes) to cfg.train.num_steps, then evaluates held-out retrieval.

    `stop_at` ends this invocation after that step with a checkpoint and no eval, for
    jobs that must fit a time slot; rerunning continues exactly where it stopped.
    Returns a dict with the step, the last logged metrics, the retrieval metrics
    (None when stopped early) and the state.
    """
    workdir = Path(workdir)
    prepare_workdir(cfg, workdir)

    # ---- Mesh: every device on the data axis.
    mesh = make_mesh(cfg.parallel, devices)
    check_divisible(cfg.train.batch_size, mesh, "train.batch_size")
    check_divisible(cfg.eval.batch_size, mesh, "eval.batch_size")

    # ---- Input: per-host batches; the batch of step s is a pure function of (seed, s).
    tokenizer = pipeline.load_tokenizer(cfg.data)
    train_source, transform = pipeline.open_split(cfg.data, cfg.data.train_split, tokenizer)
    batches = pipeline.train_batches(
        train_source, transform, cfg.train.batch_size // jax.process_count(), cfg.train.seed,
        jax.process_index(), jax.process_count(),
    )

    def to_global(local_batch):
        return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)

    # ---- Model and optimizer.
    model = MultimodalModel(cfg.model, tokenizer.get_vocab_size(), ("image", "report"))
    num_steps = cfg.train.num_steps
    schedule = learning_rate_schedule(cfg.optim, num_steps)
    tx = make_optimizer(cfg.optim, num_steps)

    # ---- Shard: initialise directly into replicated placement.
    def init(rng, batch):
        return state_lib.create(model, tx, rng, batch, method=model.contrastive)

    first_batch = to_global(batches[0])
    state = jax.jit(init, out_shardings=replicated(mesh))(
        jax.random.key(cfg.train.seed), first_batch
    )

    # ---- Resume from the newest complete checkpoint, if any.
    checkpointer = Checkpointer(
        workdir / "checkpoints", cfg.train.checkpoint_every, cfg.train.max_checkpoints
    )
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
        log.info("resumed from step %d of %s", int(state.step), workdir)
    start = int(state.step)
    end = num_steps if stop_at is None else min(stop_at, num_steps)

    # ---- Compile once, ahead of time, so step timings exclude compilation.
    compile_start = time.perf_counter()
    train_step = make_train_step(model, tx, schedule, mesh, cfg.train.loss)
    train_step = train_step.lower(state, first_batch).compile()
    log.info("train step compiled in %.1f s", time.perf_counter() - compile_start)

    # ---- Loop.
    metrics_log = MetricsLog(workdir / "metrics.jsonl")
    throughput = Throughput()
    last_metrics = {}
    inputs = pipeline.iterate(batches, start, cfg.data.workers)
    data_wait = 0.0
    with tqdm(total=num_steps, initial=start, desc="train", disable=not progress) as bar:
        for step in range(start, end):
            wait_start = time.perf_counter()
            batch = to_global(next(inputs))
            data_wait += time.perf_counter() - wait_start
            state, metrics = train_step(state, batch)
            throughput.add(cfg.train.batch_size)
            done = step + 1
            if done % cfg.train.log_every == 0 or done == num_steps:
                last_metrics = as_float32(metrics)
                elapsed = throughput.elapsed()
                last_metrics["examples_per_sec"] = throughput.measure()
                last_metrics["data_wait_fraction"] = min(data_wait / elapsed, 1.0)
                data_wait = 0.0
                metrics_log.write(done, last_metrics)
                bar.set_postfix(
                    loss=f"{last_metrics['loss']:.3f}",
                    ex_per_s=f"{last_metrics['examples_per_sec']:.0f}",
                )
            checkpointer.maybe_save(state, done, final=done == end)
            bar.update(1)
    checkpointer.close()
    metrics_log.close()
    if end < num_steps:
        return {"step": end, "metrics": last_metrics, "retrieval": None, "state": state}

    # ---- Evals on the held-out split: every pair with both an image and a report.
    eval_source, eval_transform = pipeline.open_split(cfg.data, cfg.data.eval_split, tokenizer)
    eval_batches = pipeline.eval_batches(
        eval_source, eval_transform, cfg.eval.batch_size // jax.process_count(),
        jax.process_index(), jax.process_count(),
    )
    image_emb, text_emb = embed_pairs(
        *make_embed_fns(model, mesh), state.params, map(to_global, eval_batches)
    )
    retrieval = retrieval_metrics(image_emb, text_emb, cfg.eval.recall_at)
    (workdir / "eval").mkdir(exist_ok=True)
    (workdir / "eval" / "retrieval.json").write_text(json.dumps(retrieval, indent=2) + "\n")
    return {"step": int(state.step), "metrics": last_metrics, "retrieval": retrieval,
            "state": state}
