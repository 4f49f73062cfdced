"""Everything a training run sets up before its first step: the workdir, the input, the
model definition, the sharded state, and the parallel strategy that steps it."""

import dataclasses
import logging
from pathlib import Path

import jax
import numpy as np
import optax

from mmjax import config as config_lib
from mmjax.config.base import get
from mmjax.data import pipeline
from mmjax.nn import build as model_build
from mmjax.parallel import rules
from mmjax.parallel.mesh import check_divisible, make_mesh, replicated
from mmjax.plan.params import size as parameter_count
from mmjax.train import pins
from mmjax.train import state as state_lib
from mmjax.train.checkpoint import holds_steps
from mmjax.train.optim import learning_rate_schedule, make_optimizer
from mmjax.train.step import StepBuilder
from mmjax.train.strategy import MeshStrategy, PmapStrategy
from mmjax.train.warm_start import warm_start

log = logging.getLogger(__name__)

# Keys that fix the checkpoint's shapes or the meaning of its inputs; a workdir keeps them.
FROZEN_KEYS = ("model.", "data.path", "data.modalities", "data.max_text_len", "data.tokenizer",
               "objectives.weighting", "parallel.strategy")


def prepare_workdir(cfg: config_lib.Config, workdir: Path, tokenizer) -> None:
    """Creates the workdir, refuses to resume under a different model or data config or
    on a dataset other than the one it pinned (`tokenizer`: the input's), and records the
    resolved config. A workdir with no checkpoint yet (a first run that failed or was
    stopped before its first save) has nothing to protect: it starts again as given."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    is_writer = jax.process_index() == 0  # the workdir is shared by every process of a job
    trained = holds_steps(workdir / "checkpoints")
    if path.exists() and not trained:
        log.info("%s has no checkpoint yet: starting it again with this config", workdir)
    elif path.exists():
        # Paths a config.json of an older version kept relative mean the working directory's.
        before = config_lib.absolute_paths(config_lib.read(path))
        differences = config_lib.differences(before, cfg)
        changed = [key for key in differences if key.startswith(FROZEN_KEYS)]
        if changed:
            raise config_lib.ConfigError(
                f"workdir {workdir} was trained with a different config for "
                f"{', '.join(changed)}; use a new --workdir")
        for key in differences:  # config.json keeps only the newest: say what it was
            log.warning("resuming %s with %s = %r (was %r)", workdir, key,
                        get(cfg, key), get(before, key))
    pins.check_and_pin(workdir, cfg.data, tokenizer, is_writer, keep=trained)
    if is_writer:
        config_lib.save(cfg, path)


@dataclasses.dataclass
class Input:
    """The training split as per-host batches; batch s is a pure function of (seed, s)."""

    tokenizer: object
    transform: pipeline.ExampleTransform
    batches: object  # grain MapDataset
    label_names: tuple[str, ...]
    label_prevalence: np.ndarray | None

    def define_model(self, cfg: config_lib.Config) -> model_build.ModelDef:
        return model_build.define(cfg, model_build.vocab(self.tokenizer), len(self.label_names),
                                  self.label_prevalence, self.transform.audio_rate_hz)


def open_input(cfg: config_lib.Config) -> Input:
    tokenizer = pipeline.load_tokenizer(cfg.data)
    source, transform = pipeline.open_split(cfg.data, cfg.data.train_split, tokenizer)
    batches = pipeline.train_batches(
        source, transform, cfg.train.batch_size // jax.process_count(), cfg.train.seed,
        jax.process_index(), jax.process_count(), cfg.data.train_fraction,
    )
    manifest = source.manifest
    log.info("data: %s, %d %s examples (%s)", cfg.data.path, len(source), cfg.data.train_split,
             ", ".join(cfg.data.modalities))
    prevalence = manifest.attributes.get("label_prevalence", {}).get(cfg.data.train_split)
    return Input(tokenizer, transform, batches, tuple(manifest.label_names),
                 None if prevalence is None else np.asarray(prevalence, np.float32))


@dataclasses.dataclass
class Run:
    """What the loop needs: the model, its state on the devices, and how to step it."""

    mesh: jax.sharding.Mesh
    definition: model_build.ModelDef
    schedule: optax.Schedule
    state: state_lib.TrainState  # as the strategy lays it out (pmap: a copy per device)
    param_shardings: dict
    strategy: MeshStrategy | PmapStrategy
    builder: StepBuilder

    def host_state(self) -> state_lib.TrainState:
        """The state as one copy."""
        return self.strategy.host(self.state)

    def to_device(self, batch):
        return self.strategy.to_device(batch)

    def compile(self, device_batch):
        """(the step to call, its FLOPs per device or None)."""
        return self.strategy.compile(self.builder, self.state, device_batch)


def _strategy(cfg: config_lib.Config, mesh, state_shardings, devices):
    if cfg.parallel.strategy == "pmap":
        return PmapStrategy(jax.local_devices() if devices is None else list(mesh.devices.flat))
    return MeshStrategy(mesh, state_shardings, cfg.train.accumulation_steps)


def build(cfg: config_lib.Config, definition: model_build.ModelDef, example_batch: dict,
          devices=None) -> Run:
    """Mesh, optimizer, the initialised (and warm-started) sharded state, and the step."""
    mesh = make_mesh(cfg.parallel, devices)
    check_divisible(cfg.train.batch_size // max(cfg.train.accumulation_steps, 1), mesh,
                    "train.batch_size / train.accumulation_steps")
    check_divisible(cfg.eval.batch_size, mesh, "eval.batch_size")
    parameters = definition.parameters(example_batch, mesh)
    params, batch_stats = definition.init(example_batch, parameters, mesh)
    params, batch_stats = warm_start(params, batch_stats, cfg.init, cfg.model.text)

    schedule = learning_rate_schedule(cfg.optim, cfg.train.num_steps)
    tx = make_optimizer(cfg.optim, cfg.train.num_steps, params)
    opt_shardings = rules.like_params(jax.eval_shape(tx.init, params), params,
                                      parameters.shardings, mesh)
    state_shardings = state_lib.TrainState(replicated(mesh), parameters.shardings,
                                           opt_shardings, replicated(mesh), replicated(mesh))
    state = jax.jit(lambda p, s: state_lib.create(p, tx, cfg.train.seed, s),
                    out_shardings=state_shardings)(params, batch_stats)
    strategy = _strategy(cfg, mesh, state_shardings, devices)
    log.info("model: %s parameters, mesh %s", f"{parameter_count(params):,}", dict(mesh.shape))
    return Run(mesh, definition, schedule, strategy.place(state), parameters.shardings,
               strategy, StepBuilder(definition, tx, schedule))
