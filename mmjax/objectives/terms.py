"""What every objective shares: the (total, count) convention of per-example losses, and
per-example randomness.

A loss returns two float32 scalars: the SUM of its per-element losses over the
elements that count (selected tokens, hidden patches, labelled examples, ...) and
HOW MANY elements counted. Pairs from micro-batches or devices add up exactly, so the
mean of a whole batch is sum(totals) / sum(counts) however it was split; a mean of
means would weight a micro-batch with few counted elements as much as a full one.
"""

import jax
import jax.numpy as jnp


def term(values, where, present=None):
    """(sum of `values` where `where`, count of `where`), restricted to the `present`
    examples when given: `present` [B] masks the leading axis of `where`."""
    if present is not None:
        where = where & present.reshape(present.shape + (1,) * (where.ndim - 1))
    values = values.astype(jnp.float32)
    return jnp.sum(jnp.where(where, values, 0.0)), jnp.sum(where, dtype=jnp.float32)


def mean(term):
    """total / count; zero when nothing counted."""
    total, count = term
    return total / jnp.maximum(count, 1.0)


def uniform_per_example(rngs, shape):
    """Uniform draws [B, *shape] from one key per example, so an example's mask does not
    depend on how the batch is split over devices or micro-batches."""
    return jax.vmap(lambda key: jax.random.uniform(key, shape))(rngs)
