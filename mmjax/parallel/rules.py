"""Logical axis names -> mesh axes: the parameter shardings and activation constraints.

Layers name their axes (batch, length, embed, mlp, heads, kv, vocab, patch, classes);
this table alone decides what runs data-, fsdp- or tensor-parallel.
"""

import contextlib
import functools
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.parallel.mesh import BATCH_AXES

# In order of precedence; a mesh axis goes to at most one dimension of an array.
LOGICAL_AXIS_RULES = (
    # Activations: each example lives on one data × fsdp device. First, so an activation's
    # `embed` cannot also take fsdp: activations are split by example, not by feature.
    ("batch", BATCH_AXES),
    # Megatron: the MLP hidden units, attention heads and vocabulary are split over
    # tensor, so each matmul pair needs one reduction over tensor and no weight gathers.
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    # FSDP: the model dimension of every kernel, norm and table is split over fsdp; XLA
    # all-gathers a weight just before its use and reduce-scatters its gradient.
    ("embed", "fsdp"),
    # Whole: the width of one head (heads are split instead), sequence positions (no
    # sequence parallelism), raw patch values (the input of the patch projection) and
    # classifier outputs (a handful of classes, not worth a gather before the loss).
    ("kv", None),
    ("length", None),
    ("patch", None),
    ("classes", None),
)


def _partition_spec(names, shape, mesh: Mesh, rules) -> PartitionSpec:
    """Like flax's logical_to_mesh_axes, but a dimension that does not divide by its mesh
    axes stays whole instead of failing (4 heads on tensor=8), size-1 mesh axes are left
    out, and a repeated name (an embed -> embed projection) is split on its first fit."""
    dims = [None] * len(shape)
    taken = set()
    for logical, axes in rules:
        axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes or ())
                     if mesh.shape[a] > 1)
        if not axes or taken.intersection(axes):
            continue
        parts = math.prod(mesh.shape[a] for a in axes)
        for i, name in enumerate(names):
            if name == logical and dims[i] is None and shape[i] % parts == 0:
                dims[i] = axes[0] if len(axes) == 1 else axes
                taken.update(axes)
                break
    return PartitionSpec(*dims)


def param_shardings(mesh: Mesh, params, rules=LOGICAL_AXIS_RULES):
    """NamedShardings shaped like the unboxed `params`, from the logical names of boxed
    (nn.LogicallyPartitioned) parameters, real or abstract; unnamed ones are replicated."""
    def sharding(leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            return NamedSharding(mesh, _partition_spec(leaf.names, leaf.value.shape, mesh,
                                                       rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(sharding, params,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def abstract_params(model: nn.Module, rng, batch, method=None):
    """The boxed parameters `model.init` would create, as shapes: nothing is computed."""
    init = functools.partial(model.init, method=method)
    return jax.eval_shape(init, rng, batch)["params"]


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Activation constraints (`nn.with_logical_constraint`) traced inside resolve to
    `mesh` through `rules`; outside, they are no-ops. It must surround the tracing, i.e.
    the first call of a jitted function: jit's cache does not see flax's rules."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def unsharded_above(shardings, params, min_bytes: int) -> list[str]:
    """Paths ('a/b/c') of parameters over `min_bytes` that every device holds whole,
    because no rule splits them or their dimensions do not divide the mesh axes."""
    leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]
    return [jax.tree_util.keystr(path, simple=True, separator="/")
            for (path, leaf), sharding in zip(leaves, jax.tree.leaves(shardings), strict=True)
            if sharding.is_fully_replicated
            and math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize > min_bytes]


def like_params(tree, params, shardings, mesh: Mesh):
    """Shardings for `tree` (e.g. an optimizer state): a leaf whose key path ends with a
    parameter's path and has its shape is placed like that parameter (Adam's moments),
    anything else (counts, scalars) is replicated. Works through optax's masked and
    multi-transform states, which `optax.tree_map_params` does not."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    by_path = {tuple(path): (leaf.shape, sharding)
               for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings), strict=True)}

    def place(path, leaf):
        for start in range(len(path)):
            shape, sharding = by_path.get(tuple(path[start:]), (None, None))
            if sharding is not None and shape == leaf.shape:
                return sharding
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(place, tree)
