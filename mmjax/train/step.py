"""The train step, in two strategies, and the jitted embedding functions for evals.

mesh: one jit over a (data, fsdp, tensor) mesh. Parameters and optimizer state are
  placed by the logical-axis rules, the batch is split over the batch axes, and the
  contrastive losses run under jax.shard_map with explicit collectives. With
  `accumulation_steps > 1` the gradient is still that of the whole global batch.
pmap: parameters replicated on every device, per-device batches, losses reduced with
  psum and gradients averaged with pmean.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.config import ConfigError
from mmjax.objectives import contrastive
from mmjax.objectives.terms import mean
from mmjax.parallel.mesh import BATCH_AXES, batch_sharding, replicated
from mmjax.train.losses import LOG_VARIANCES, Objectives, loss_values
from mmjax.train.state import TrainState

PMAP_AXIS = "data"


def split_params(params: dict) -> tuple[dict, dict | None]:
    """(model parameters, uncertainty log-variances or None)."""
    model_params = {k: v for k, v in params.items() if k != LOG_VARIANCES}
    return model_params, params.get(LOG_VARIANCES)


def variable_shardings(param_shardings: dict, mesh, with_batch_stats: bool) -> dict:
    """Where model_variables() live: parameters as `param_shardings` place them (the
    log-variances dropped), BatchNorm statistics replicated."""
    return {"params": split_params(param_shardings)[0],
            **({"batch_stats": replicated(mesh)} if with_batch_stats else {})}


def model_variables(params: dict, batch_stats: dict) -> dict:
    """What model.apply evaluates with: the model's parameters and, with BatchNorm, its
    running statistics (without them in the dict, BatchNorm would be an error)."""
    return {"params": split_params(params)[0], **({"batch_stats": batch_stats}
                                                   if batch_stats else {})}


def _contrastive_fn(kind: str, mesh=None) -> Callable:
    """(a, b, scale, bias, valid) -> the loss over the global batch: shard_map over the
    mesh's batch axes, or the per-device body for use inside pmap when mesh is None."""
    if kind == "softmax":
        fn = (contrastive.sharded_softmax_infonce(mesh) if mesh is not None
              else contrastive.softmax_infonce_local(PMAP_AXIS))
        return lambda a, b, scale, bias, valid: fn(a, b, scale, valid)
    return (contrastive.sharded_sigmoid_loss(mesh) if mesh is not None
            else contrastive.sigmoid_loss_local(PMAP_AXIS))


def _metrics(total, losses, scale, grads, schedule, state, batch) -> dict:
    metrics = {
        "loss": total,
        **{f"loss/{name}": value for name, value in losses.items()},
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
        "temperature": 1.0 / scale,
    }
    if "text_truncated" in batch:
        metrics["text_truncated_fraction"] = jnp.mean(
            batch["text_truncated"].astype(jnp.float32))
    return metrics


class StepBuilder:
    """Builds the train step of one model, objective set and optimizer."""

    def __init__(self, model, objectives: Objectives, tx: optax.GradientTransformation,
                 schedule: optax.Schedule):
        self.model, self.objectives, self.tx, self.schedule = model, objectives, tx, schedule

    def _forward(self, model_params, batch_stats, batch, rng):
        """(outputs, updated batch_stats): BatchNorm normalises with the batch's statistics
        (over the global batch: jit sees all of it, pmap averages over PMAP_AXIS)."""
        out, updated = self.model.apply({"params": model_params, "batch_stats": batch_stats},
                                        batch, rng, method=self.objectives.forward,
                                        mutable=["batch_stats"])
        return out, updated.get("batch_stats", batch_stats)

    def _loss_fn(self, contrastive_fn, reduce_sum=lambda x: x):
        def loss_fn(params, batch_stats, batch, rng):
            model_params, log_variances = split_params(params)
            out, batch_stats = self._forward(model_params, batch_stats, batch, rng)
            losses = loss_values(self.objectives, out, contrastive_fn, reduce_sum)
            return self.objectives.total(losses, log_variances), (losses, out["scale"],
                                                                  batch_stats)
        return loss_fn

    def _update(self, state: TrainState, grads, batch_stats, total, metrics):
        """The next state, or, when the loss or a gradient is NaN or Inf, the same weights
        one step on (metrics["nonfinite"] = 1): one bad batch or overflow is skipped, not
        written into the weights for good. A NaN or Inf anywhere in the gradients makes
        their norm non-finite, so two scalars decide, and lax.cond runs the optimizer
        only when they are finite (a select over every weight would cost ~80% more
        compile time and ~20% more step time on the smoke model)."""
        finite = jnp.isfinite(total) & jnp.isfinite(metrics["grad_norm"])

        def apply(_):
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), opt_state, batch_stats

        def skip(_):
            return state.params, state.opt_state, state.batch_stats

        params, opt_state, batch_stats = jax.lax.cond(finite, apply, skip, None)
        metrics = {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}
        return TrainState(state.step + 1, params, opt_state, state.rng, batch_stats), metrics

    # ---- mesh

    def mesh_step(self, mesh, state_shardings, accumulation_steps: int = 1):
        """jit(state, global batch) -> (state, metrics), the state donated."""
        contrastive_fn = _contrastive_fn(self.objectives.cfg.contrastive_loss, mesh)
        loss_fn = self._loss_fn(contrastive_fn)

        def train_step(state: TrainState, batch):
            rng = jax.random.fold_in(state.rng, state.step)
            batch = {**batch, "row": jnp.arange(jax.tree.leaves(batch)[0].shape[0])}
            if accumulation_steps == 1:
                (total, (losses, scale, batch_stats)), grads = jax.value_and_grad(
                    loss_fn, has_aux=True)(state.params, state.batch_stats, batch, rng)
            else:  # define_model refuses BatchNorm here: its statistics are per micro-batch
                batch_stats = state.batch_stats
                total, losses, scale, grads = self._accumulated(
                    mesh, contrastive_fn, accumulation_steps, state.params, batch, rng)
            metrics = _metrics(total, losses, scale, grads, self.schedule, state, batch)
            return self._update(state, grads, batch_stats, total, metrics)

        return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding(mesh)),
                       out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)

    def _accumulated(self, mesh, contrastive_fn, steps: int, params, batch, rng):
        """The global-batch gradient from `steps` micro-batches (GradCache, Gao et al. 2021).

        1. Run every micro-batch forward without gradients, caching the embeddings and
           the (total, count) of each per-example objective.
        2. Differentiate the loss of the whole batch with respect to the cached
           embeddings, the logit scale/bias, the loss weights and each objective's mean.
        3. Run every micro-batch again with gradients, pulling the cached embedding
           gradients back through the encoders and adding each objective's total over
           the whole batch's count, so the sum equals the big-batch gradient.
        """
        model_params, _ = split_params(params)
        size = jax.tree.leaves(batch)[0].shape[0]
        if size % steps:
            raise ConfigError(f"train.batch_size={size} is not divisible by "
                              f"train.accumulation_steps={steps}")
        micro_sharding = NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))

        def to_micro(x):  # row i*steps + m goes to micro-batch m: no device moves rows
            x = x.reshape(size // steps, steps, *x.shape[1:]).swapaxes(0, 1)
            return jax.lax.with_sharding_constraint(x, micro_sharding)

        def from_micro(x):  # the inverse of to_micro: the original row order
            return x.swapaxes(0, 1).reshape(size, *x.shape[2:])

        micro = jax.tree.map(to_micro, batch)  # its "row"s keep per-example masks unchanged

        def cache(_, micro_batch):
            out, _ = self._forward(model_params, {}, micro_batch, rng)
            return None, (out["embeddings"], out["present"], out["terms"])

        _, (embeddings, present, terms) = jax.lax.scan(cache, None, micro)
        embeddings, present = jax.tree.map(from_micro, (embeddings, present))
        terms = jax.tree.map(lambda x: jnp.sum(x, 0), terms)
        counts = {name: count for name, (_, count) in terms.items()}

        def whole_batch_loss(params, embeddings, means):
            model_params, log_variances = split_params(params)
            scale, bias = self.model.apply({"params": model_params},
                                           method=lambda m: (m.scale(), m.logit_bias))
            out = {"embeddings": embeddings, "present": present, "scale": scale,
                   "bias": bias, "terms": {}}
            losses = {**means, **loss_values(self.objectives, out, contrastive_fn)}
            return self.objectives.total(losses, log_variances), (losses, scale)

        means = {name: mean(term) for name, term in terms.items()}
        (total, (losses, scale)), (grads, embedding_grads, mean_grads) = jax.value_and_grad(
            whole_batch_loss, argnums=(0, 1, 2), has_aux=True)(params, embeddings, means)
        embedding_grads = jax.tree.map(to_micro, embedding_grads)

        def backward(grads, inputs):
            micro_batch, cotangents = inputs

            def surrogate(model_params):
                out, _ = self._forward(model_params, {}, micro_batch, rng)
                value = sum(jnp.vdot(cotangents[m], out["embeddings"][m]) for m in cotangents)
                for name, (total, _) in out["terms"].items():
                    value += mean_grads[name] * total / jnp.maximum(counts[name], 1)
                return value

            return jax.tree.map(jnp.add, grads, jax.grad(surrogate)(model_params)), None

        model_grads, _ = jax.lax.scan(backward, split_params(grads)[0],
                                      (micro, embedding_grads))
        return total, losses, scale, {**grads, **model_grads}

    # ---- pmap

    def pmap_step(self):
        """pmap(state replicated per device, [devices, per-device batch, ...])."""
        contrastive_fn = _contrastive_fn(self.objectives.cfg.contrastive_loss)
        loss_fn = self._loss_fn(contrastive_fn, lambda x: jax.lax.psum(x, PMAP_AXIS))

        def train_step(state: TrainState, batch):
            rng = jax.random.fold_in(state.rng, state.step)
            size = jax.tree.leaves(batch)[0].shape[0]  # per device
            batch = {**batch, "row": jax.lax.axis_index(PMAP_AXIS) * size + jnp.arange(size)}
            (total, (losses, scale, batch_stats)), grads = jax.value_and_grad(
                loss_fn, has_aux=True)(state.params, state.batch_stats, batch, rng)
            # The losses are psum-reduced, so each device's gradient is n times its own
            # share of the global gradient and the mean over devices is the whole of it.
            grads = jax.lax.pmean(grads, PMAP_AXIS)
            metrics = jax.lax.pmean(
                _metrics(total, losses, scale, grads, self.schedule, state, batch), PMAP_AXIS)
            return self._update(state, grads, batch_stats, total, metrics)

        return jax.pmap(train_step, axis_name=PMAP_AXIS, donate_argnums=0)


def as_float32(tree):
    """Host copies of metrics as Python floats, for logging."""
    return {k: float(jnp.asarray(v, jnp.float32)) for k, v in jax.device_get(tree).items()}
