"""A trained workdir back in memory — its config, tokenizer, model and parameters, placed
on a mesh — for `mmjax eval` and `mmjax export`. The optimizer state is not rebuilt."""

import logging
from pathlib import Path

import jax
import numpy as np

from mmjax import config as config_lib
from mmjax import storage
from mmjax.data import pipeline
from mmjax.eval.context import EvalContext
from mmjax.nn import build as model_build
from mmjax.parallel.mesh import make_mesh
from mmjax.train import pins
from mmjax.train.checkpoint import first_mismatch, place, read_fields

log = logging.getLogger(__name__)

IMPORTED_FILE = "imported.json"  # in a workdir `mmjax import` wrote (mmjax/interop/workdir.py)


def load(workdir: str | Path, step: int | None = None, data_path: str | None = None,
         devices=None, eval_overrides=()) -> EvalContext:
    """The workdir's model at checkpoint `step` (newest by default), ready to evaluate on
    its own held-out split or on the dataset at `data_path`, whose label set must match.
    `eval_overrides` ('eval.key=value') change how it is evaluated, nothing else."""
    workdir = storage.path(workdir, "--workdir")
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise config_lib.ConfigError(f"{workdir} is not a training workdir: no config.json")
    cfg = config_lib.read(config_path)
    for assignment in eval_overrides:
        if not assignment.startswith("eval."):
            raise config_lib.ConfigError(f"--set {assignment}: only eval.* keys can change "
                                         "after training")
    config_lib.apply(cfg, eval_overrides)
    tokenizer = pins.workdir_tokenizer(workdir, cfg.data)  # the one the model was trained with
    imported = (workdir / IMPORTED_FILE).is_file()  # written by `mmjax import`: no heads
    if imported and not data_path:
        raise config_lib.ConfigError(f"{workdir} holds an imported model, trained on no "
                                     "mmjax dataset: pass the one to evaluate with --data")
    if not imported:
        train_manifest = pipeline.open_source(cfg.data.path, cfg.data.train_split).manifest
        train_labels = tuple(train_manifest.label_names)
        # Class weights are part of the objectives the model is defined with.
        prevalence = train_manifest.attributes.get("label_prevalence", {}).get(
            cfg.data.train_split)
    if data_path:
        cfg.data.path = str(data_path)
    source, transform = pipeline.open_split(cfg.data, cfg.data.eval_split, tokenizer)
    label_names = tuple(source.manifest.label_names)
    if imported:
        train_labels, prevalence = label_names, None
    if label_names != train_labels:
        raise config_lib.ConfigError(f"{data_path} has labels {label_names}, the model was "
                                     f"trained on {train_labels}")

    mesh = make_mesh(cfg.parallel, devices)
    example = next(pipeline.eval_batches(source, transform, cfg.eval.batch_size))
    definition = model_build.define(
        cfg, model_build.vocab(tokenizer), 0 if imported else len(label_names),
        None if prevalence is None else np.asarray(prevalence), transform.audio_rate_hz)
    parameters = definition.parameters(example, mesh)
    checkpoints = workdir / "checkpoints"
    if not checkpoints.is_dir():
        raise config_lib.ConfigError(f"no checkpoints in {workdir} (expected "
                                     f"{checkpoints}/<step>/)")
    try:
        stored, step = read_fields(checkpoints, ("params", "batch_stats"), step)
    except FileNotFoundError as e:
        raise config_lib.ConfigError(str(e)) from None
    variables = model_build.model_variables(stored["params"], stored.get("batch_stats", {}))
    shardings = model_build.variable_shardings(parameters.shardings, mesh,
                                               "batch_stats" in variables)
    if problem := first_mismatch({"params": variables["params"]},
                                 {"params": parameters.model_shapes}):
        raise config_lib.ConfigError(f"the checkpoint of step {step} in {workdir} does not fit "
                                     f"the model its config.json describes: {problem}")
    variables = place(variables, shardings)
    log.info("loaded step %d of %s", step, workdir)
    out_dir = workdir / "eval" if jax.process_index() == 0 else None
    return EvalContext(cfg, definition.module, variables, shardings, mesh, tokenizer,
                       label_names, step, out_dir)
