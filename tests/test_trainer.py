"""The trainer at scale: every objective trains, mesh shapes and pmap agree, accumulation
is exact, fine-tuning restores by name, freezing holds (SIGTERM: tests/reliability)."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config
from flax import traverse_util

from mmjax import config as config_lib
from mmjax.train import metrics as metrics_lib
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.loop import train
from mmjax.train.setup import build, open_input
from mmjax.train.warm_start import pretrained_variables

PRETRAIN = REPO / "experiments" / "synthmed_pretrain.py"
FINETUNE = REPO / "experiments" / "synthmed_finetune.py"


def _shrink(cfg: config_lib.Config, steps: int) -> config_lib.Config:
    """The experiment's objectives on a model small enough to train in seconds."""
    for tower in (cfg.model.image, cfg.model.video, cfg.model.signal, cfg.model.text):
        tower.width, tower.depth, tower.mlp_dim = 32, 1, 64
    cfg.model.decoder.width, cfg.model.decoder.mlp_dim = 32, 64
    cfg.model.fusion.width, cfg.model.fusion.mlp_dim = 32, 64
    cfg.model.embed_dim = 32
    cfg.train.batch_size, cfg.eval.batch_size = 32, 32
    cfg.train.num_steps, cfg.train.log_every = steps, 5
    cfg.train.checkpoint_every = steps
    cfg.optim.warmup_steps = 5
    cfg.optim.learning_rate = 2e-3
    return cfg


def _losses(workdir: Path) -> list[dict]:
    return metrics_lib.train_rows(workdir / "metrics.jsonl")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, all_modalities_dataset):
    """synthmed_pretrain.py, shrunk: every objective on every modality."""
    cfg = _shrink(config_lib.load(PRETRAIN, [f"data.path={all_modalities_dataset}"]), 40)
    cfg.train.checkpoint_every = 20  # step 20 is kept for the resume test
    workdir = tmp_path_factory.mktemp("pretrain")
    train(cfg, workdir, progress=False, evaluate=False)
    return cfg, workdir


def test_every_pretraining_objective_learns(pretrained):
    cfg, workdir = pretrained
    rows = _losses(workdir)
    names = [k for k in rows[0] if k.startswith("loss/")]
    assert len(names) == 4 + 3 + 3  # 4 contrastive pairs, 3 MAE, MLM, matching, caption
    first = rows[0]
    last = {name: np.mean([r[name] for r in rows[-3:]]) for name in ["loss", *names]}
    assert last["loss"] < 0.9 * first["loss"]
    for m in ("image", "video", "signal"):
        assert last[f"loss/mae/{m}"] < 0.7 * first[f"loss/mae/{m}"], m
    for name in ("loss/mlm", "loss/caption"):
        assert last[name] < first[name] - 0.5, name  # nats per token
    pairs = [n for n in names if n.startswith("loss/contrastive/")]
    assert np.mean([last[n] for n in pairs]) < np.mean([first[n] for n in pairs]) - 0.2
    # Matching starts at ln 2 and needs longer than this to separate; it must stay sane.
    assert 0.3 < last["loss/matching"] < np.log(2) + 0.05


def test_resume_with_every_objective_is_bitwise(pretrained, tmp_path):
    """Random masks and negatives come from fold_in(run key, step): resuming the
    straight run's step-20 checkpoint ends with its step-40 parameters, bit for bit."""
    cfg, straight = pretrained
    # The straight run's workdir as it was at step 20: its config, checkpoint and log.
    shutil.copy(straight / "config.json", tmp_path / "config.json")
    shutil.copytree(straight / "checkpoints" / "20", tmp_path / "checkpoints" / "20")
    logged = (straight / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "metrics.jsonl").write_text("".join(logged[:4]))  # steps 5 to 20
    resumed = train(cfg, tmp_path, progress=False, evaluate=False)["state"]
    checkpointer = Checkpointer(straight / "checkpoints", cfg.train.checkpoint_every, 2)
    reference = checkpointer.restore(like=resumed)
    checkpointer.close()
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["loss"] for r in _losses(tmp_path)] == [r["loss"] for r in _losses(straight)]


def test_finetune_restores_encoders_by_name_and_adds_heads(pretrained, tmp_path):
    pre_cfg, pre_dir = pretrained
    cfg = _shrink(config_lib.load(FINETUNE, [f"data.path={pre_cfg.data.path}",
                                            f"init.from={pre_dir}"]), 20)
    data = open_input(cfg)
    run = build(cfg, data.define_model(cfg), data.batches[0])
    source = pretrained_variables(pre_dir)["params"]
    params = traverse_util.flatten_dict(run.host_state().params, sep="/")
    encoders = [p for p in params if p.startswith("encoders_")]
    assert encoders and all(np.array_equal(params[p], source[p]) for p in encoders)
    new = {p.split("/")[0] for p in params if p not in source}
    assert new == {"diagnosis", "risk", "log_variances"}, new  # fusion was pretrained
    # It trains: the class-weighted diagnosis loss falls.
    train(cfg, tmp_path, progress=False, evaluate=False)
    rows = _losses(tmp_path)
    assert rows[-1]["loss/diagnosis"] < rows[0]["loss/diagnosis"]


def test_a_data_fsdp_tensor_mesh_and_pmap_give_the_same_losses(tmp_path, smoke_dataset):
    """Losses, gradient norms and the final parameters: Adam all but hides a gradient
    scaled by the device count (pmap summing instead of averaging), its norm does not."""
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps, cfg.train.log_every = 5, 1
    # Per-example objectives beside the global contrastive one; masks are per example.
    cfg.objectives.diagnosis = cfg.objectives.mlm = 0.5
    runs = {}
    # One sharded step against one device on 8x1x1, 2x4x1 and 1x8x1: tests/test_parallel.py.
    for strategy, data, fsdp, tensor in [("mesh", 2, 2, 2), ("pmap", -1, 1, 1)]:
        name = f"{strategy}-{data}x{fsdp}x{tensor}"
        cfg.parallel.strategy = strategy
        cfg.parallel.data, cfg.parallel.fsdp, cfg.parallel.tensor = data, fsdp, tensor
        params = train(cfg, tmp_path / name, progress=False, evaluate=False)["state"].params
        rows = _losses(tmp_path / name)
        runs[name] = ([r["loss"] for r in rows], [r["grad_norm"] for r in rows], params)
    losses, grad_norms, params = runs.pop("mesh-2x2x2")
    for name, (other_losses, other_norms, other_params) in runs.items():
        np.testing.assert_allclose(other_losses, losses, rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(other_norms, grad_norms, rtol=1e-4, err_msg=name)
        for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(other_params), strict=True):
            # atol: Adam turns summation-order noise in ~0 gradients into ~1e-6 steps
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)


def test_accumulated_step_equals_the_big_batch_step(tmp_path, smoke_dataset):
    """Contrastive (global batch), MLM, MAE and captioning: 4 micro-batches, same step."""
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps, cfg.train.log_every = 2, 1
    cfg.objectives.mlm = cfg.objectives.mae = cfg.objectives.caption = 0.5
    states = {}
    for steps in (1, 4):
        cfg.train.accumulation_steps = steps
        states[steps] = train(cfg, tmp_path / str(steps), progress=False,
                              evaluate=False)["state"]
        assert len(_losses(tmp_path / str(steps))) == 2
    big, accumulated = (_losses(tmp_path / str(s)) for s in (1, 4))
    for a, b in zip(big, accumulated, strict=True):
        for name in a:
            if name.startswith("loss"):
                np.testing.assert_allclose(b[name], a[name], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4)
    for x, y in zip(jax.tree.leaves(states[1].params), jax.tree.leaves(states[4].params),
                    strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)


def test_frozen_tower_does_not_move(tmp_path, smoke_dataset):
    """LiT: a locked image tower; the text tower and projections still train."""
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps = 10
    cfg.optim.freeze = "^encoders_image/"
    data = open_input(cfg)
    initial = build(cfg, data.define_model(cfg), data.batches[0]).host_state().params
    final = train(cfg, tmp_path, progress=False, evaluate=False)["state"].params
    for a, b in zip(jax.tree.leaves(initial["encoders_image"]),
                    jax.tree.leaves(final["encoders_image"]), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(initial["encoders_report"]), jax.tree.leaves(final["encoders_report"]),
        strict=True)]
    assert all(moved)


def test_matching_through_late_fusion_is_refused(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.objectives.matching = 1.0
    with pytest.raises(config_lib.ConfigError, match="objectives.matching needs"):
        train(cfg, tmp_path, progress=False)


def test_a_freeze_pattern_matching_nothing_is_named(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.optim.freeze = "^image_tower/"
    with pytest.raises(config_lib.ConfigError, match="optim.freeze '\\^image_tower/'"):
        train(cfg, tmp_path, progress=False)


def test_bfloat16_logs_tensorboard_mfu_and_keeps_periodic_checkpoints(tmp_path, smoke_dataset,
                                                                       caplog):
    caplog.set_level("INFO", logger="mmjax")
    cfg = tiny_config(smoke_dataset)
    cfg.model.dtype = "bfloat16"  # mixed precision: bf16 compute, f32 parameters
    cfg.train.num_steps, cfg.train.log_every = 12, 2
    cfg.train.peak_tflops = 1.0  # CPUs have no table entry; a configured peak enables MFU
    cfg.train.checkpoint_every, cfg.train.max_checkpoints = 1, 1
    cfg.train.keep_checkpoint_every = 4
    state = train(cfg, tmp_path, progress=False, evaluate=False)["state"]
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(state.params))
    rows = _losses(tmp_path)
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert all(0 < r["mfu"] < 1 for r in rows), rows
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [4, 8, 12], kept  # the newest, and every 4th step for good
    # Without a progress bar: a line per startup stage, then one per logged step.
    logged = [r.getMessage() for r in caplog.records]
    for stage in ("data: ", "model: ", "compiling the train step", "train step compiled in"):
        assert any(line.startswith(stage) for line in logged), (stage, logged)
    steps = [line.split(":")[0] for line in logged if line.startswith("step ")]
    assert steps == [f"step {s}/12" for s in range(2, 13, 2)], logged


def test_fsdp_shards_parameters_and_optimizer_moments_alike(smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.parallel.data, cfg.parallel.fsdp = 1, 8
    data = open_input(cfg)
    state = build(cfg, data.define_model(cfg), data.batches[0]).state
    kernel = state.params["encoders_image"]["transformer"]["block_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.spec[0] == "fsdp" and not kernel.sharding.is_fully_replicated
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.shape == kernel.shape]
    assert moments and all(m.sharding.is_equivalent_to(kernel.sharding, m.ndim)
                           for m in moments)
