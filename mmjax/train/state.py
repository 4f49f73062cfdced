"""Everything a training run carries from one step to the next."""

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar; the batch order is a function of it
    params: dict
    opt_state: optax.OptState
    # The run's raw uint32 key. Step s uses fold_in(rng, s), so a resumed run draws the
    # same masks as an uninterrupted one; the input order needs nothing but `step`.
    rng: jax.Array
    # BatchNorm running statistics (flax's 'batch_stats' collection; {} without BatchNorm):
    # updated by every train step, read by evaluation and export.
    batch_stats: dict


def create(params: dict, tx: optax.GradientTransformation, seed: int,
           batch_stats: dict | None = None) -> TrainState:
    rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), rng, batch_stats or {})

