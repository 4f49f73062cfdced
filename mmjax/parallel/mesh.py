"""The device mesh and the shardings the trainer places arrays with."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.config import ConfigError, ParallelConfig

DATA_AXIS = "data"


def make_mesh(cfg: ParallelConfig, devices=None) -> Mesh:
    """A 1-D mesh over the devices; the batch is split along its 'data' axis."""
    devices = list(jax.devices() if devices is None else devices)
    size = len(devices) if cfg.data == -1 else cfg.data
    if not 1 <= size <= len(devices):
        raise ConfigError(f"parallel.data={cfg.data} but {len(devices)} devices are available")
    return Mesh(np.asarray(devices[:size]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch_size: int, mesh: Mesh, key: str) -> None:
    if batch_size % mesh.size:
        raise ConfigError(
            f"{key}={batch_size} is not divisible by the {mesh.size} devices of the mesh"
        )
