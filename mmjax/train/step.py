"""The jitted train step and embedding functions, sharded over the mesh.

Parameters and optimizer state are replicated; the batch is split on the data
axis. The state is donated so XLA updates it in place.
"""

import jax
import jax.numpy as jnp
import optax

from mmjax.config import ConfigError
from mmjax.objectives.contrastive import sigmoid_loss, softmax_infonce
from mmjax.parallel.mesh import batch_sharding, replicated
from mmjax.train.state import TrainState

LOSSES = {
    "softmax": lambda image, text, out, valid: softmax_infonce(image, text, out["scale"], valid),
    "sigmoid": lambda image, text, out, valid: sigmoid_loss(image, text, out["scale"],
                                                            out["bias"], valid),
}


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule, mesh,
                    loss: str = "softmax"):
    if loss not in LOSSES:
        raise ConfigError(f"train.loss '{loss}' is unknown; choose from {', '.join(LOSSES)}")
    contrastive_loss = LOSSES[loss]

    def loss_fn(params, batch):
        out = model.apply({"params": params}, batch, method=model.contrastive)
        embeddings, present = out["embeddings"], out["present"]
        valid = present["image"] & present["report"]
        value = contrastive_loss(embeddings["image"], embeddings["report"], out, valid)
        return value, out["scale"]

    def train_step(state: TrainState, batch):
        (loss, scale), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
            "temperature": 1.0 / scale,
            "text_truncated_fraction": jnp.mean(batch["text_truncated"].astype(jnp.float32)),
        }
        return TrainState(state.step + 1, params, opt_state), metrics

    return jax.jit(
        train_step,
        in_shardings=(replicated(mesh), batch_sharding(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=0,
    )


def make_embed_fns(model, mesh):
    """Jitted (params, images) -> image embeddings and (params, ids, mask) -> text embeddings."""

    def embed_image(params, images):
        return model.apply({"params": params}, images, method=model.embed_image)

    def embed_text(params, token_ids, mask):
        return model.apply({"params": params}, token_ids, mask, method=model.embed_text)

    rep, data = replicated(mesh), batch_sharding(mesh)
    return (
        jax.jit(embed_image, in_shardings=(rep, data), out_shardings=data),
        jax.jit(embed_text, in_shardings=(rep, data, data), out_shardings=data),
    )


def as_float32(tree):
    """Host copies of metrics as Python floats, for logging."""
    return {k: float(jnp.asarray(v, jnp.float32)) for k, v in jax.device_get(tree).items()}
