"""Everything a training run carries from one step to the next."""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar; the batch order is a function of it
    params: dict
    opt_state: optax.OptState


def create(model, tx: optax.GradientTransformation, rng: jax.Array, example_batch,
           method=None) -> TrainState:
    """Initialises the parameters `method` uses (default: all), without axis metadata."""
    variables = model.init(rng, example_batch, method=method)
    params = nn.meta.unbox(variables["params"])
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
