"""Dense, embedding and norm layers whose parameters carry logical axis names.

The names (batch, length, embed, mlp, heads, kv, vocab, ...) are mapped to mesh axes
by a rules table in `parallel/`, so one model definition runs data-, fsdp- or
tensor-parallel by configuration alone. Outside a mesh they change nothing.
"""

import flax.linen as nn
import jax.numpy as jnp

Dtype = jnp.dtype
LECUN_NORMAL = nn.initializers.lecun_normal()


def kernel_init(*axes: str | None, init=LECUN_NORMAL):
    # rules=(): the names only place parameters (parallel/rules.py). Constraining on
    # unbox would break DenseGeneral, which unboxes its kernel before reshaping it to
    # the named rank (flax#3676), and projections that name `embed` twice.
    return nn.with_logical_partitioning(init, axes, rules=())


def bias_init(*axes: str):
    return kernel_init(*axes, init=nn.initializers.zeros_init())


def dense(features, in_axis: str, out_axes, dtype: Dtype, param_dtype: Dtype, name: str,
          axis=-1, use_bias: bool = True) -> nn.DenseGeneral:
    """A DenseGeneral whose kernel is named (in_axis, *out_axes)."""
    out_axes = (out_axes,) if isinstance(out_axes, str) else tuple(out_axes)
    in_axes = (in_axis,) if isinstance(in_axis, str) else tuple(in_axis)
    return nn.DenseGeneral(
        features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=kernel_init(*in_axes, *out_axes), bias_init=bias_init(*out_axes), name=name,
    )


def layer_norm(dtype: Dtype, param_dtype: Dtype, name: str, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
        scale_init=kernel_init("embed", init=nn.initializers.ones_init()),
        bias_init=bias_init("embed"),
    )


def constrain(x, *axes: str):
    """Names an activation's axes for sharding; a no-op without a mesh and rules."""
    return nn.with_logical_constraint(x, axes)
