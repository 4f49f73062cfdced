"""Orbax checkpoints of the train state; the newest complete one is resumed from."""

import dataclasses
from pathlib import Path

import jax
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
