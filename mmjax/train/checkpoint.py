"""Orbax checkpoints of the train state; the newest complete one is resumed from."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax.train.state import TrainState


class Checkpointer:
    """Async saves every `every` steps and at the end, keeping the last `keep` and,
    when `keep_every` > 0, every step that is a multiple of it.

    Orbax writes to a temporary folder and renames it when complete, so the newest
    *listed* step is always a whole checkpoint, even after a kill mid-write.
    """

    def __init__(self, directory: str | Path, every: int, keep: int, keep_every: int = 0):
        self.every = every
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 keep_period=keep_every or None),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restores onto the shapes, dtypes and shardings of `like`."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError:
            if like.batch_stats:
                raise
            # Written before the state had BatchNorm statistics; everything else must match.
            fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
                      if f.name != "batch_stats"}
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(fields))
            return TrainState(**restored, batch_stats={})

    def maybe_save(self, state: TrainState, step: int, final: bool = False) -> bool:
        """Saves on the schedule, or when `final`; a step is never written twice."""
        due = final or step % self.every == 0
        if not due or step == self.latest_step():
            return False
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def read_fields(directory: str | Path, fields: tuple[str, ...], step: int | None = None
                ) -> tuple[dict, int]:
    """({field: host arrays}, step) of the saved TrainState fields named (e.g. 'params',
    'batch_stats'), from checkpoint `step` (default the newest); fields the checkpoint lacks
    are left out. Each process reads whole arrays onto its first local device, whatever
    mesh wrote them, and the optimizer state is never read: what evaluation, export and
    init.from need, on any number of processes."""
    directory = Path(directory).absolute()
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
