"""The train step of one model definition and optimizer, built for either parallel
strategy (train/strategy.py places and calls it).

mesh: one jit over a (data, fsdp, tensor) mesh. Parameters and optimizer state are
  placed by the logical-axis rules, the batch is split over the batch axes, and the
  contrastive losses run under jax.shard_map with explicit collectives. With
  `accumulation_steps > 1` the gradient is still that of the whole global batch.
pmap: parameters replicated on every device, per-device batches, losses reduced with
  psum and gradients averaged with pmean.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.config import ConfigError
from mmjax.nn.build import ModelDef, split_params
from mmjax.objectives.terms import mean
from mmjax.parallel.mesh import BATCH_AXES, PMAP_AXIS, batch_sharding, replicated
from mmjax.train.state import TrainState


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


def all_finite(tree) -> jax.Array:
    """Whether every value in the tree is finite (True for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class StepBuilder:
    """Builds the train step of one model definition and optimizer."""

    def __init__(self, definition: ModelDef, tx: optax.GradientTransformation,
                 schedule: optax.Schedule):
        self.definition, self.tx, self.schedule = definition, tx, schedule
        self.objectives = definition.objectives

    def _loss_fn(self, kernel, reduce_sum=lambda x: x):
        def loss_fn(params, batch_stats, batch, rng):
            out, batch_stats = self.definition.forward(params, batch_stats, batch, rng)
            losses = self.objectives.losses(out, kernel, reduce_sum)
            total = self.objectives.total(losses, split_params(params)[1])
            return total, (losses, out["scale"], batch_stats)
        return loss_fn

    def _update(self, state: TrainState, grads, batch_stats, total, metrics):
        """The next state, or, when the loss, a gradient, or a new weight or statistic is
        NaN or Inf, the same weights one step on (metrics["nonfinite"] = 1): one bad batch,
        overflow or learning rate is skipped, not written into the weights for good. A NaN
        or Inf anywhere in the gradients makes their norm non-finite, so two scalars
        decide whether the optimizer runs at all (lax.cond: a select over every weight
        would cost ~80% more compile time and ~20% more step time on the smoke model);
        the new weights are then checked leaf by leaf (a norm would overflow first)."""
        finite = jnp.isfinite(total) & jnp.isfinite(metrics["grad_norm"])

        def apply(_):
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
            params = self.definition.clamp(optax.apply_updates(state.params, updates))
            new = (params, opt_state, batch_stats)
            ok = all_finite((new[0], new[2]))
            return (*jax.lax.cond(ok, lambda: new, lambda: unchanged(None)), ok)

        def unchanged(_):
            return state.params, state.opt_state, state.batch_stats

        def skip(_):
            return (*unchanged(None), jnp.array(False))

        params, opt_state, batch_stats, applied = jax.lax.cond(finite, apply, skip, None)
        metrics = {**metrics, "nonfinite": 1.0 - applied.astype(jnp.float32)}
        return TrainState(state.step + 1, params, opt_state, state.rng, batch_stats), metrics

    # ---- mesh

    def mesh_step(self, mesh, state_shardings, accumulation_steps: int = 1):
        """jit(state, global batch) -> (state, metrics), the state donated."""
        kernel = self.objectives.kernel(mesh)
        loss_fn = self._loss_fn(kernel)
        accumulate = GradCache(self, mesh, kernel, accumulation_steps)

        def train_step(state: TrainState, batch):
            rng = jax.random.fold_in(state.rng, state.step)
            batch = {**batch, "row": jnp.arange(jax.tree.leaves(batch)[0].shape[0])}
            if accumulation_steps == 1:
                (total, (losses, scale, batch_stats)), grads = jax.value_and_grad(
                    loss_fn, has_aux=True)(state.params, state.batch_stats, batch, rng)
            else:  # config.validate refuses BatchNorm here: its statistics are per micro-batch
                batch_stats = state.batch_stats
                total, losses, scale, grads = accumulate(state.params, batch, rng)
            metrics = _metrics(total, losses, scale, grads, self.schedule, state, batch)
            return self._update(state, grads, batch_stats, total, metrics)

        return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding(mesh)),
                       out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)

    # ---- pmap

    def pmap_step(self):
        """pmap(state replicated per device, [devices, per-device batch, ...])."""
        loss_fn = self._loss_fn(self.objectives.kernel(axis=PMAP_AXIS),
                                lambda x: jax.lax.psum(x, PMAP_AXIS))

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


class GradCache:
    """The global-batch gradient from `steps` micro-batches (GradCache, Gao et al. 2021).

    1. Run every micro-batch forward without gradients, caching the embeddings and
       the (total, count) of each per-example objective.
    2. Differentiate the loss of the whole batch with respect to the cached
       embeddings, the logit scale/bias, the loss weights and each objective's mean.
    3. Run every micro-batch again with gradients, pulling the cached embedding
       gradients back through the encoders and adding each objective's total over
       the whole batch's count, so the sum equals the big-batch gradient.
    """

    def __init__(self, builder: StepBuilder, mesh, kernel, steps: int):
        self.definition, self.objectives = builder.definition, builder.objectives
        self.mesh, self.kernel, self.steps = mesh, kernel, steps

    def _to_micro(self, x):
        """Row i*steps + m goes to micro-batch m: no device moves rows."""
        size = x.shape[0]
        x = x.reshape(size // self.steps, self.steps, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(self.mesh, PartitionSpec(None, BATCH_AXES)))

    @staticmethod
    def _from_micro(x):
        """The inverse of _to_micro: the original row order."""
        return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    def __call__(self, params, batch, rng):
        size = jax.tree.leaves(batch)[0].shape[0]
        if size % self.steps:
            raise ConfigError(f"train.batch_size={size} is not divisible by "
                             f"train.accumulation_steps={self.steps}")
        micro = jax.tree.map(self._to_micro, batch)  # its "row"s keep per-example masks
        embeddings, present, terms = self._cache(params, micro, rng)
        means = {name: mean(term) for name, term in terms.items()}
        (total, (losses, scale)), (grads, embedding_grads, mean_grads) = jax.value_and_grad(
            self._whole_batch_loss, argnums=(0, 1, 2), has_aux=True)(
                params, embeddings, means, present)
        counts = {name: count for name, (_, count) in terms.items()}
        model_grads = self._backward(params, split_params(grads)[0], micro, rng,
                                     jax.tree.map(self._to_micro, embedding_grads),
                                     mean_grads, counts)
        return total, losses, scale, {**grads, **model_grads}

    def _cache(self, params, micro, rng):
        """Every micro-batch forward: embeddings in batch order, terms summed."""
        def cache(_, micro_batch):
            out, _ = self.definition.forward(params, {}, micro_batch, rng)
            return None, (out["embeddings"], out["present"], out["terms"])

        _, (embeddings, present, terms) = jax.lax.scan(cache, None, micro)
        embeddings, present = jax.tree.map(self._from_micro, (embeddings, present))
        return embeddings, present, jax.tree.map(lambda x: jnp.sum(x, 0), terms)

    def _whole_batch_loss(self, params, embeddings, means, present):
        scale, bias = self.definition.contrastive_scalars(params)
        out = {"embeddings": embeddings, "present": present, "scale": scale, "bias": bias,
               "terms": {}}
        losses = {**means, **self.objectives.losses(out, self.kernel)}
        return self.objectives.total(losses, split_params(params)[1]), (losses, scale)

    def _backward(self, params, grads, micro, rng, embedding_grads, mean_grads, counts):
        """Adds each micro-batch's gradient through its cached embedding cotangents and
        its objectives' totals over the whole batch's counts."""
        def backward(grads, inputs):
            micro_batch, cotangents = inputs

            def surrogate(model_params):
                out, _ = self.definition.forward(model_params, {}, micro_batch, rng)
                value = sum(jnp.vdot(cotangents[m], out["embeddings"][m]) for m in cotangents)
                for name, (total, _) in out["terms"].items():
                    value += mean_grads[name] * total / jnp.maximum(counts[name], 1)
                return value

            return jax.tree.map(jnp.add, grads, jax.grad(surrogate)(model_params)), None

        model_params = split_params(params)[0]
        return jax.lax.scan(backward, grads, (micro, embedding_grads))[0]
