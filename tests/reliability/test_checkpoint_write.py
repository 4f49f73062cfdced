"""A checkpoint write that fails (the disk fills while orbax renames it into place) stops
the run with an error naming the folder and the newest complete checkpoint, which stays
intact: a rerun resumes from it and finishes."""

import errno

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_config, tree_digest
from orbax.checkpoint._src.path import atomicity

from mmjax.train.checkpoint import Checkpointer
from mmjax.train.failures import CheckpointWriteError
from mmjax.train.loop import train


def test_a_failed_write_is_reported_and_the_previous_checkpoint_survives(
        tmp_path, smoke_dataset, monkeypatch):
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps, cfg.train.checkpoint_every, cfg.train.log_every = 8, 4, 4
    cfg.train.tensorboard = False
    cfg.eval.evaluators = ()
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    complete = {}

    async def disk_full_at_step_8(self, *args, **kwargs):
        if self.get_final().name == "8":
            complete.update(tree_digest(tmp_path / "checkpoints" / "4"))
            raise OSError(errno.ENOSPC, "No space left on device", str(self.get_final()))
        return await finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", disk_full_at_step_8)
    with pytest.raises(CheckpointWriteError, match=r"(?s)No space left on device.*newest "
                       r"complete checkpoint \(step 4\) is intact"):
        train(cfg, tmp_path, progress=False)
    assert complete and tree_digest(tmp_path / "checkpoints" / "4") == complete
    assert ocp.utils.checkpoint_steps(tmp_path / "checkpoints") == [4]

    monkeypatch.undo()
    resumed = train(cfg, tmp_path, progress=False)
    assert resumed["step"] == 8
    checkpointer = Checkpointer(tmp_path / "checkpoints", 4, 2)
    assert checkpointer.latest_step() == 8
    checkpointer.close()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(resumed["state"].params))
