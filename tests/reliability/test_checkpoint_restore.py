"""Restoring a checkpoint that does not fit names the first key that differs."""

import re

import jax
import jax.numpy as jnp
import optax
import pytest

from mmjax.config import ConfigError
from mmjax.train.checkpoint import Checkpointer, CheckpointMismatch
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
