"""Restoring: a checkpoint that does not fit names the first key that differs; a
truncated, non-finite or digest-failing newest step falls back to the intact one before
it."""

import json
import re

import jax
import jax.numpy as jnp
import optax
import pytest

from mmjax.config import ConfigError
from mmjax.train.checkpoint import (
    CheckpointCorrupt,
    Checkpointer,
    CheckpointMismatch,
    DigestMismatch,
    digest,
    read_fields,
)
from mmjax.train.state import TrainState

PARAMS = {"encoder": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "head": jnp.ones(4)}


def _state(params, batch_stats=None):
    tx = optax.adamw(1e-3)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.random.key_data(jax.random.key(0)), batch_stats or {})


def _saved(directory, state):
    checkpointer = Checkpointer(directory, every=1, keep=2)
    checkpointer.maybe_save(state, 1, final=True)
    checkpointer.close()
    return Checkpointer(directory, every=1, keep=2)


def test_a_fitting_checkpoint_restores_exactly(tmp_path):
    state = _state(PARAMS)
    restored = _saved(tmp_path, state).restore(state)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), restored, state))


@pytest.mark.parametrize("params, problem", [
    ({**PARAMS, "head": jnp.ones(5)},
     "params/head has shape (4,) in the checkpoint, (5,) in the model"),
    ({**PARAMS, "extra": jnp.ones(1)}, "params/extra is not in the checkpoint"),
    ({"encoder": PARAMS["encoder"]}, "params/head is in the checkpoint but not in the model"),
])
def test_a_mismatched_model_is_told_the_first_differing_key(tmp_path, params, problem):
    checkpointer = _saved(tmp_path, _state(PARAMS))
    with pytest.raises(CheckpointMismatch, match=re.escape(f"step 1 in {tmp_path}") + ".*"
                       + re.escape(problem)):
        checkpointer.restore(_state(params))
    assert issubclass(CheckpointMismatch, ConfigError)  # the CLI prints it as an error


def test_batchnorm_statistics_missing_from_the_checkpoint_are_named(tmp_path):
    checkpointer = _saved(tmp_path, _state(PARAMS))
    with pytest.raises(CheckpointMismatch, match="batch_stats/bn/mean is not in the checkpoint"):
        checkpointer.restore(_state(PARAMS, {"bn": {"mean": jnp.zeros(2)}}))


def _two_steps(directory, second):
    checkpointer = Checkpointer(directory, every=1, keep=2)
    checkpointer.maybe_save(_state(PARAMS), 1)
    checkpointer.maybe_save(second, 2, final=True)
    checkpointer.close()
    return Checkpointer(directory, every=1, keep=2)


def _truncate_data(step_dir):
    """Cuts every stored array file of a step in half, as a disk-full or kill would."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and "d" in p.parent.name]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_a_damaged_newest_step_falls_back_to_the_one_before(tmp_path, caplog, damage):
    """Training's resume and evaluation's read both pass over it, saying why."""
    second = _state({**PARAMS, "head": jnp.full(4, jnp.nan if damage == "nan" else 2.0)})
    checkpointer = _two_steps(tmp_path, second)
    if damage == "truncated":
        _truncate_data(tmp_path / "2")

    with caplog.at_level("WARNING"):
        restored = checkpointer.restore(_state(PARAMS))
        fields, step = read_fields(tmp_path, ("params",))

    assert step == 1
    assert float(restored.params["head"][0]) == float(fields["params"]["head"][0]) == 1.0
    assert "step 2" in caplog.text and "using step 1" in caplog.text
    with pytest.raises(CheckpointCorrupt if damage == "nan" else Exception):
        read_fields(tmp_path, ("params",), step=2)  # asked for by number: no fallback


def test_no_intact_step_is_one_error_naming_each(tmp_path):
    nan = _state({**PARAMS, "head": jnp.full(4, jnp.inf)})
    checkpointer = Checkpointer(tmp_path, every=1, keep=2)
    checkpointer.maybe_save(nan, 1, final=True)
    checkpointer.close()
    with pytest.raises(CheckpointCorrupt, match="step 1 holds NaN or Inf weights"):
        Checkpointer(tmp_path, every=1, keep=2).restore(_state(PARAMS))
    assert issubclass(CheckpointCorrupt, ConfigError)


def _step_files(step_dir):
    return sorted((p for p in step_dir.rglob("*") if p.is_file() and "d" in p.parent.name),
                  key=lambda p: p.stat().st_size)


def test_changed_values_with_finite_weights_fail_the_digest_and_fall_back(tmp_path, caplog):
    """The digest saved with step 2 no longer matches its arrays (as after bytes flipped
    on disk that still decode): step 2 is passed over, by resume and by evaluation."""
    checkpointer = _two_steps(tmp_path, _state({**PARAMS, "head": jnp.full(4, 2.0)}))
    metadata = tmp_path / "2" / "_CHECKPOINT_METADATA"
    record = json.loads(metadata.read_text())
    record["custom_metadata"]["mmjax_digest"]["params/head"][1] += 1
    metadata.write_text(json.dumps(record))

    with caplog.at_level("WARNING"):
        restored = checkpointer.restore(_state(PARAMS))
        fields, step = read_fields(tmp_path, ("params",))
    assert step == 1 and float(restored.params["head"][0]) == 1.0
    assert "params/head does not hold the values that were saved" in caplog.text
    with pytest.raises(DigestMismatch, match="checkpoint step 2 .*params/head"):
        read_fields(tmp_path, ("params",), step=2)
    assert issubclass(DigestMismatch, ConfigError)


def test_flipped_bytes_never_load_as_other_weights(tmp_path):
    """Whatever a flipped byte in the stored arrays does to the decoder, the restore gives
    step 1's weights or step 2's exactly, never something else."""
    second = _state({**PARAMS, "head": jnp.linspace(-1.0, 1.0, 4)})
    _two_steps(tmp_path, second)
    for path in _step_files(tmp_path / "2"):
        data = bytearray(path.read_bytes())
        for offset in range(len(data) // 3, len(data), max(len(data) // 7, 1)):
            data[offset] ^= 0x5A
        path.write_bytes(bytes(data))
    fields, step = read_fields(tmp_path, ("params",))
    expected = PARAMS["head"] if step == 1 else second.params["head"]
    assert (fields["params"]["head"] == expected).all()


@pytest.mark.parametrize("leaf", [
    jnp.arange(6, dtype=jnp.float32), jnp.arange(6, dtype=jnp.bfloat16),
    jnp.arange(6, dtype=jnp.int32), jnp.arange(6, dtype=jnp.uint8), jnp.ones(6, bool)])
def test_the_digest_sees_one_changed_value_and_two_swapped_ones(leaf):
    base = digest({"x": leaf})["x"]
    changed = leaf.at[3].set(leaf[3] == 0 if leaf.dtype == bool else leaf[3] + 1)
    swapped = leaf.at[1].set(leaf[4]).at[4].set(leaf[1])
    assert digest({"x": changed})["x"] != base
    if leaf.dtype != bool:
        assert digest({"x": swapped})["x"] != base
    assert digest({"x": leaf})["x"] == base  # deterministic
