"""The parallel strategy behind one interface, so the loop has no strategy branches:
where the state lives, how a host's batch reaches the devices, the compiled step, and
how its outputs come back as one copy."""

import logging
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.parallel import rules
from mmjax.parallel.mesh import batch_sharding
from mmjax.train.metrics import compiled_step_flops
from mmjax.train.step import StepBuilder

log = logging.getLogger(__name__)


class MeshStrategy:
    """One jit over the mesh; the state sharded by the logical-axis rules."""

    def __init__(self, mesh: Mesh, state_shardings, accumulation_steps: int):
        self.mesh, self.state_shardings = mesh, state_shardings
        self.accumulation_steps = accumulation_steps

    def place(self, state):
        return state  # created where the rules put it

    def host(self, tree):
        return tree

    def to_device(self, batch):
        return jax.make_array_from_process_local_data(batch_sharding(self.mesh), batch)

    def compile(self, builder: StepBuilder, state, example_batch):
        """The AOT-compiled step (step timings exclude compilation) and its FLOPs per
        device (None when XLA does not say)."""
        log.info("compiling the train step")
        start = time.perf_counter()
        with rules.sharding_context(self.mesh):
            step = builder.mesh_step(self.mesh, self.state_shardings, self.accumulation_steps)
            compiled = step.lower(state, example_batch).compile()
        log.info("train step compiled in %.1f s", time.perf_counter() - start)
        return compiled, compiled_step_flops(compiled)


class PmapStrategy:
    """A replica of the state on every local device; per-device batches."""

    def __init__(self, devices):
        self.devices = list(devices)
        self._sharding = NamedSharding(Mesh(np.asarray(self.devices), ("replica",)),
                                       PartitionSpec("replica"))

    def place(self, state):
        """pmap's layout: a leading axis with one copy per device."""
        n = len(self.devices)
        return jax.tree.map(
            lambda x: jax.device_put(np.repeat(np.asarray(x)[None], n, 0), self._sharding),
            jax.device_get(state))

    def host(self, tree):
        """One copy of a replicated tree (the state, the metrics)."""
        return jax.tree.map(lambda x: x[0], tree)

    def to_device(self, batch):
        return jax.tree.map(lambda x: x.reshape(len(self.devices), -1, *x.shape[1:]), batch)

    def compile(self, builder: StepBuilder, state, example_batch):
        """pmap has no AOT path worth the complexity: it compiles on the first step."""
        return builder.pmap_step(), None
