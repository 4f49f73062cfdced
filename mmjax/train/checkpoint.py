"""Orbax checkpoints of the train state; the newest complete one is resumed from."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax import storage
from mmjax.config import ConfigError
from mmjax.train.failures import CheckpointWriteError
from mmjax.train.state import TrainState


class CheckpointMismatch(ConfigError):
    """A checkpoint whose keys or shapes differ from the model its config describes."""


def _key_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def first_mismatch(saved: dict, expected: dict) -> str | None:
    """The first key, field by field in the expected order, that one tree has and the
    other lacks or that has another shape in each; None when the trees fit."""
    def leaves(tree):
        return {_key_name(path): leaf.shape
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    for name in [*expected, *(k for k in saved if k not in expected)]:
        if name not in saved:
            return f"{name} is not in the checkpoint"
        if name not in expected:
            return f"{name} is in the checkpoint but not in the model"
        have, want = leaves(saved[name]), leaves(expected[name])
        for key in [*want, *(k for k in have if k not in want)]:
            where = "/".join(filter(None, (name, key)))
            if key not in have:
                return f"{where} is not in the checkpoint"
            if key not in want:
                return f"{where} is in the checkpoint but not in the model"
            if tuple(have[key]) != tuple(want[key]):
                return f"{where} has shape {tuple(have[key])} in the checkpoint, " \
                       f"{tuple(want[key])} in the model"
    return None


class Checkpointer:
    """Async saves every `every` steps and at the end, keeping the last `keep` and,
    when `keep_every` > 0, every step that is a multiple of it.

    Orbax writes to a temporary folder and renames it when complete, so the newest
    *listed* step is always a whole checkpoint, even after a kill mid-write.
    """

    def __init__(self, directory: str | Path, every: int, keep: int, keep_every: int = 0):
        self.every = every
        self.directory = storage.absolute(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 keep_period=keep_every or None),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restores onto the shapes, dtypes and shardings of `like`; a checkpoint that does
        not fit it is a CheckpointMismatch naming the first key that differs."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        saved = self.manager.item_metadata(step).tree
        fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)}
        if "batch_stats" not in saved and not like.batch_stats:
            del fields["batch_stats"]  # written before the state had BatchNorm statistics
        if problem := first_mismatch(saved, fields):
            raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} does not "
                                     f"fit the model: {problem}")
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(fields))
        return TrainState(**{"batch_stats": {}, **restored})

    def maybe_save(self, state: TrainState, step: int, final: bool = False) -> bool:
        """Saves on the schedule, or when `final`; a step is never written twice. A failed
        write (this one, or the previous one finishing in the background) is a
        CheckpointWriteError; the newest complete checkpoint stays as it was."""
        due = final or step % self.every == 0
        if not due or step == self.latest_step():
            return False
        try:
            saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as e:  # noqa: BLE001 - every failure of a write is reported alike
            raise self._write_error(e) from e
        return saved

    def close(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._write_error(e) from e
        finally:
            self.manager.close()

    def _write_error(self, cause: Exception) -> CheckpointWriteError:
        complete = ocp.utils.checkpoint_steps(self.directory)
        newest = f"step {max(complete)}" if complete else "none"
        return CheckpointWriteError(
            f"writing a checkpoint to {self.directory} failed: {cause!r}. The newest complete "
            f"checkpoint ({newest}) is intact; fix the cause (e.g. free disk space) and rerun "
            "to resume from it.")


def read_fields(directory: str | Path, fields: tuple[str, ...], step: int | None = None
                ) -> tuple[dict, int]:
    """({field: host arrays}, step) of the saved TrainState fields named (e.g. 'params',
    'batch_stats'), from checkpoint `step` (default the newest); fields the checkpoint lacks
    are left out. Each process reads whole arrays onto its first local device, whatever
    mesh wrote them, and the optimizer state is never read: what evaluation, export and
    init.from need, on any number of processes."""
    directory = storage.absolute(directory)
    with ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
        step = manager.latest_step() if step is None else step
        if step not in manager.all_steps():
            raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; it has "
                                    f"{sorted(manager.all_steps()) or 'none'}")
        saved = manager.item_metadata(step).tree
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = {name: jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), saved[name])
            for name in fields if name in saved}
        restored = manager.restore(step, args=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    return jax.tree.map(np.asarray, restored), step


def place(tree, shardings):
    """Host arrays, the same on every process, as global arrays laid out by `shardings`
    (a tree or a prefix of it); each process supplies only its own devices' pieces."""
    def put(sharding, subtree):
        def one(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        return jax.tree.map(one, subtree)
    return jax.tree.map(put, shardings, tree,
                        is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
