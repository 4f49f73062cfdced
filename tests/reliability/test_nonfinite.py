"""A step whose loss or gradients are NaN/Inf is skipped and counted; a run that keeps
producing them stops with a message instead of writing NaN weights."""

import jax
import numpy as np
import pytest
from conftest import tiny_config

from mmjax.cli import main
from mmjax.train import metrics as metrics_lib
from mmjax.train.failures import TrainingDiverged
from mmjax.train.guard import NonfiniteGuard
from mmjax.train.setup import build, open_input

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _host(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def test_a_nan_batch_is_skipped_and_the_next_one_trains(smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    data = open_input(cfg)
    good = data.batches[0]
    run = build(cfg, data.define_model(cfg), good)
    step, _ = run.compile(run.to_device(good))
    bad = {**good, "image": good["image"].astype(np.float32)}
    bad["image"][3] = np.nan  # one corrupt pixel array poisons the whole batch's loss
    before = _host(run.state)

    run.state, metrics = step(run.state, run.to_device(bad))
    assert float(metrics["nonfinite"]) == 1.0 and not np.isfinite(float(metrics["loss"]))
    after = _host(run.state)
    assert int(after.step) == 1  # the data of a skipped step is not read again
    for name in ("params", "opt_state", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, getattr(after, name), getattr(before, name))

    for _ in range(2):  # optax's warm-up starts at 0 and counts only the steps taken
        run.state, metrics = step(run.state, run.to_device(good))
        assert float(metrics["nonfinite"]) == 0.0
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), _host(run.state.params),
                         after.params)
    assert np.mean(jax.tree.leaves(moved)) > 0.8  # it trains again


def test_a_diverging_run_stops_after_k_bad_steps_in_a_row(tmp_path, smoke_dataset, capsys):
    settings = [f"data.path={smoke_dataset}", "optim.learning_rate=1e30",
                "train.max_nonfinite_steps=3", "train.num_steps=40", "train.log_every=1",
                "train.tensorboard=false", "eval.evaluators=[]"]
    code = main(["train", "--no-progress", "--config", "experiments/smoke_cpu.py",
                 "--workdir", str(tmp_path)] + [a for s in settings for a in ("--set", s)])
    assert code == 2
    error = capsys.readouterr().err
    assert "NaN or Inf" in error and "train.max_nonfinite_steps=3" in error
    rows = metrics_lib.train_rows(tmp_path / "metrics.jsonl")
    assert rows[-1]["step"] < 40 and rows[-1]["skipped_steps"] >= 2
    assert all(np.isfinite(row["grad_norm"]) or row["nonfinite"] for row in rows)


def test_the_guard_counts_streaks_and_forgives_a_good_step():
    guard = NonfiniteGuard(limit=3)
    for step, flag in enumerate([0, 1, 1, 0, 1, 1], start=1):
        guard.add(step, flag)
    guard.flush()
    assert guard.skipped == 4 and guard.streak == 2
    with pytest.raises(TrainingDiverged, match=r"steps 5\.\.7 all had a NaN"):
        guard.add(7, 1)
        guard.flush()


def test_a_nan_update_of_finite_gradients_is_skipped(smoke_dataset):
    """A NaN learning rate turns finite gradients into NaN weights: the new weights are
    checked too, so the state stays as it was."""
    cfg = tiny_config(smoke_dataset)
    cfg.optim.learning_rate = float("nan")
    data = open_input(cfg)
    good = data.batches[0]
    run = build(cfg, data.define_model(cfg), good)
    step, _ = run.compile(run.to_device(good))
    before = _host(run.state)

    run.state, metrics = step(run.state, run.to_device(good))

    assert float(metrics["nonfinite"]) == 1.0 and np.isfinite(float(metrics["loss"]))
    after = _host(run.state)
    for name in ("params", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(after, name), getattr(before, name))


def test_a_diverging_resume_keeps_the_checkpoint_it_started_from(tmp_path, smoke_dataset,
                                                                 capsys):
    """Resuming a healthy workdir with a learning rate that blows up, saving every step
    and keeping one checkpoint: the healthy step survives, bit for bit, and the error
    names it."""
    base = ["--no-progress", "--config", "experiments/smoke_cpu.py", "--workdir", str(tmp_path)]
    settings = [f"data.path={smoke_dataset}", "train.num_steps=40", "train.log_every=1",
                "train.checkpoint_every=1", "train.max_checkpoints=1",
                "train.tensorboard=false", "eval.evaluators=[]"]
    flags = [a for s in settings for a in ("--set", s)]
    assert main(["train", *base, *flags, "--stop-at", "3"]) == 0
    from mmjax.train.checkpoint import read_fields
    healthy, step = read_fields(tmp_path / "checkpoints", ("params",))
    assert step == 3
    capsys.readouterr()

    blow_up = ["--set", "optim.learning_rate=1e30", "--set", "train.max_nonfinite_steps=2"]
    assert main(["train", *base, *flags, *blow_up]) == 2

    error = capsys.readouterr().err
    assert "Step 3, which this run resumed from, is kept" in error
    kept, _ = read_fields(tmp_path / "checkpoints", ("params",), step=3)
    jax.tree.map(np.testing.assert_array_equal, kept, healthy)
