"""The device mesh and the shardings the trainer places arrays with.

Three axes: `data` (replicas), `fsdp` (parameters split ZeRO-3 style, batch split too)
and `tensor` (matmul dimensions split, Megatron style). The batch is split over data and
fsdp; which parameter dimensions go where is the business of `rules.py`.
"""

import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.config import ConfigError, ParallelConfig

MESH_AXES = ("data", "fsdp", "tensor")
# FSDP is data parallel for activations: every device of both axes sees its own examples.
BATCH_AXES = ("data", "fsdp")
PMAP_AXIS = "data"  # pmap's one device axis, named like the mesh's data axis


def mesh_shape(cfg: ParallelConfig, device_count: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with the one -1 resolved to the devices the others leave."""
    sizes = {axis: getattr(cfg, axis) for axis in MESH_AXES}
    keys = " × ".join(f"parallel.{axis}" for axis in MESH_AXES)
    bad = [f"parallel.{axis}={size}" for axis, size in sizes.items() if size < 1 and size != -1]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: mesh sizes are positive device counts or -1")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"only one of {', '.join(f'parallel.{a}' for a in MESH_AXES)} may "
                          f"be -1, got {', '.join(f'parallel.{a}=-1' for a in free)}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if device_count % fixed:
            raise ConfigError(f"{keys} without parallel.{free[0]}=-1 is {fixed}, which does "
                              f"not divide the {device_count} devices available")
        sizes[free[0]] = device_count // fixed
    elif fixed > device_count:
        raise ConfigError(f"{keys} = {fixed} but {device_count} devices are available")
    return tuple(sizes[axis] for axis in MESH_AXES)


def make_mesh(cfg: ParallelConfig, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh. Over all devices, create_device_mesh lays the axes
    along the physical topology (a TPU torus, splitting a physical axis where a size needs
    it); a subset is simply reshaped in the given order."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    if math.prod(shape) == len(devices):
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    else:
        grid = np.asarray(devices[:math.prod(shape)]).reshape(shape)
    return Mesh(grid, MESH_AXES)


def batch_shards(mesh: Mesh) -> int:
    """How many parts the batch is split into: data × fsdp."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data and fsdp axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch_size: int, mesh: Mesh, key: str) -> None:
    shards = batch_shards(mesh)
    if batch_size % shards:
        raise ConfigError(f"{key}={batch_size} is not divisible by the {shards} batch shards "
                          f"of the mesh (parallel.data × parallel.fsdp)")
