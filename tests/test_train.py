"""End-to-end training on the smoke config: learning, logs, checkpoints, resume, devices."""

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_config

from mmjax import config as config_lib
from mmjax.train import metrics as metrics_lib
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_dataset):
    workdir = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(smoke_dataset)
    return cfg, workdir, train(cfg, workdir, progress=False)


def test_loss_decreases(trained):
    cfg, workdir, _ = trained
    losses = [row["loss"] for row in metrics_lib.train_rows(workdir / "metrics.jsonl")]
    assert losses[0] > 0.9 * np.log(cfg.train.batch_size)  # starts near chance
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.5  # nats


def test_held_out_retrieval_far_above_chance(trained):
    _, workdir, result = trained
    retrieval = result["evals"]["retrieval"]["image-report"]
    chance = retrieval["chance"]
    # Half of SynthMed's patients have no finding and near-identical reports, which caps
    # the achievable median rank near n / 4; chance is n / 2 and R@10 at chance is 10 / n.
    n = retrieval["num_examples"]
    for direction in ("image_to_report", "report_to_image"):
        assert retrieval[direction]["R@10"] >= 2.5 * chance["R@10"], retrieval
        assert retrieval[direction]["median_rank"] <= n / 3, retrieval
    mean_r1 = (retrieval["image_to_report"]["R@1"] + retrieval["report_to_image"]["R@1"]) / 2
    assert mean_r1 >= 3 * chance["R@1"], retrieval
    written = json.loads((workdir / "eval" / "retrieval.json").read_text())
    assert written == {"step": 300, "split": "eval", "metrics": result["evals"]["retrieval"]}


def test_metrics_log_every_logged_step(trained):
    cfg, workdir, _ = trained
    rows = metrics_lib.train_rows(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(20, cfg.train.num_steps + 1, 20))
    for row in rows:
        assert row["examples_per_sec"] > 0 and np.isfinite(row["loss"])
        assert {"grad_norm", "learning_rate", "temperature", "data_wait_fraction",
                "text_truncated_fraction", "loss/contrastive/image-report"} <= set(row)
        assert row["loss"] == row["loss/contrastive/image-report"]  # the only objective
        assert 0 <= row["text_truncated_fraction"] < 0.05


def test_resolved_config_is_written(trained):
    cfg, workdir, _ = trained
    assert config_lib.read(workdir / "config.json") == cfg


def test_checkpoint_restores_identical_params(trained):
    cfg, workdir, result = trained
    state = result["state"]
    checkpointer = Checkpointer(workdir / "checkpoints", cfg.train.checkpoint_every, 2)
    assert checkpointer.latest_step() == cfg.train.num_steps
    restored = checkpointer.restore(like=state)
    checkpointer.close()
    assert int(restored.step) == cfg.train.num_steps
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_from_before_batch_stats_still_restore(trained, tmp_path):
    """A state saved without the batch_stats field (mmjax before BatchNorm) restores into
    today's state with empty statistics; every other leaf is as saved."""
    state = trained[2]["state"]
    old = Checkpointer(tmp_path / "old", every=1, keep=1)
    fields = {name: getattr(state, name) for name in ("step", "params", "opt_state", "rng")}
    old.manager.save(1, args=ocp.args.StandardSave(fields), force=True)
    old.close()
    checkpointer = Checkpointer(tmp_path / "old", every=1, keep=1)
    restored = checkpointer.restore(like=state)
    checkpointer.close()
    assert restored.batch_stats == {}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stop_then_resume_equals_uninterrupted(trained, tmp_path):
    """From the straight run's step-200 checkpoint: stop at 250, resume to 300."""
    cfg, straight_dir, result = trained
    shutil.copy(straight_dir / "config.json", tmp_path / "config.json")
    shutil.copytree(straight_dir / "checkpoints" / "200", tmp_path / "checkpoints" / "200")
    logged = (straight_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "metrics.jsonl").write_text("".join(logged[:10]))  # steps 20 to 200
    stopped = train(cfg, tmp_path, progress=False, stop_at=250)
    assert stopped["step"] == 250 and stopped["evals"] is None
    resumed = train(cfg, tmp_path, progress=False)
    assert resumed["step"] == cfg.train.num_steps
    for a, b in zip(jax.tree.leaves(result["state"].params),
                    jax.tree.leaves(resumed["state"].params), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise on CPU
    # Both runs logged the same losses at the same steps.
    straight = metrics_lib.train_rows(straight_dir / "metrics.jsonl")
    pieced = metrics_lib.train_rows(tmp_path / "metrics.jsonl")
    assert [r["loss"] for r in pieced] == [r["loss"] for r in straight]


def test_rerunning_a_finished_workdir_does_not_train_again(trained):
    cfg, workdir, result = trained
    lines_before = len(metrics_lib.train_rows(workdir / "metrics.jsonl"))
    again = train(cfg, workdir, progress=False)
    assert again["step"] == cfg.train.num_steps
    assert len(metrics_lib.train_rows(workdir / "metrics.jsonl")) == lines_before
    assert again["evals"] == result["evals"]  # evaluated again, the same


def test_resuming_under_a_different_model_is_refused(trained, smoke_dataset):
    cfg, workdir, _ = trained
    changed = tiny_config(smoke_dataset)
    changed.model.text.width = 64
    with pytest.raises(config_lib.ConfigError, match="model.text.width"):
        train(changed, workdir, progress=False)


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path, smoke_dataset):
    """Same global batch split 8 ways: losses agree to float32 reduction-order noise."""
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps = 5
    cfg.train.log_every = 1
    assert jax.device_count() == 8
    runs = {}
    for n in (1, 8):
        train(cfg, tmp_path / str(n), devices=jax.devices()[:n], progress=False,
              evaluate=False)
        runs[n] = [r["loss"] for r in metrics_lib.train_rows(tmp_path / str(n) / "metrics.jsonl")]
    np.testing.assert_allclose(runs[1], runs[8], rtol=1e-5)


def test_sigmoid_loss_trains_too(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.objectives.contrastive_loss = "sigmoid"
    # CLIP's start: from SigLIP's t = 10 the 100 smoke steps barely leave the plateau
    cfg.model.init_temperature = 0.07
    cfg.train.num_steps, cfg.train.log_every = 100, 10
    train(cfg, tmp_path, progress=False, evaluate=False)
    losses = [row["loss"] for row in metrics_lib.train_rows(tmp_path / "metrics.jsonl")]
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.4, losses  # nats per image


def test_unknown_loss_is_named(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.objectives.contrastive_loss = "triplet"
    expected = "'objectives.contrastive_loss' expects one of softmax, sigmoid, got 'triplet'"
    with pytest.raises(config_lib.ConfigError, match=expected):
        train(cfg, tmp_path, progress=False)
