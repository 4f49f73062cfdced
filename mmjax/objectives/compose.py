"""The objectives a config trains, composed: one forward pass inside `model.apply`
encodes each modality once and computes every enabled objective's per-example
(total, count) terms; the losses that couple the whole global batch (contrastive) follow
from its embeddings through the parallel strategy's kernel; `total` weighs them into one
training loss. Gradient accumulation caches the embeddings between the two."""

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config import ConfigError, ObjectivesConfig
from mmjax.objectives import contrastive, registry
from mmjax.objectives.terms import mean
from mmjax.objectives.weighting import combine

LOG_VARIANCES = "log_variances"  # the uncertainty weights' key beside the model params
RNG_STREAMS = 3  # the step's keys split once: mlm draws from 0, mae from 1, matching from 2


@dataclasses.dataclass(frozen=True)
class Vocab:
    """What MLM needs of the tokenizer."""

    size: int
    mask_id: int | None = 0  # None: the tokenizer has no mask token (no MLM)
    special_ids: tuple[int, ...] = ()  # never masked or sampled


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the objectives need of the data."""

    vocab: Vocab
    num_labels: int = 0
    positive_weight: tuple[float, ...] | None = None  # diagnosis class weights


class Forward:
    """What an objective's `terms` see inside model.apply: the module, the batch, each
    needed modality encoded and embedded once, presence masks and the step's keys."""

    def __init__(self, module, batch, cfg: ObjectivesConfig, setup: Setup, encode, rng):
        self.module, self.batch, self.cfg, self.setup = module, batch, cfg, setup
        modalities = module.modalities
        size = batch["text" if "report" in modalities else modalities[0]].shape[0]
        self.present = {m: batch.get(f"has_{m}", jnp.ones(size, bool)) for m in modalities}
        self.encoded = {m: module.encode(m, batch) for m in encode}
        self.embeddings = {m: module.embed(m, self.encoded[m][0]) for m in self.encoded}
        self._rng, self._keys = rng, jax.random.split(rng, RNG_STREAMS)
        # One key per example from its row in the global batch: masks are the same however
        # the batch is split over devices or micro-batches.
        self._row = batch.get("row", jnp.arange(size))
        self._fused = None

    def key(self, stream: int):
        """The step's key number `stream`, independent of every other; a new objective
        that draws takes the next unused number."""
        if stream < RNG_STREAMS:
            return self._keys[stream]
        return jax.random.fold_in(self._rng, stream)

    def per_example(self, key):
        return jax.vmap(jax.random.fold_in, (None, 0))(key, self._row)

    def fused(self):
        """The fusion of every modality, computed once for the heads that read it."""
        if self._fused is None:
            self._fused = self.module.fuse(self.encoded, self.embeddings, self.present)
        return self._fused

    def seen(self):
        """Examples with at least one input: a patient with none has nothing to diagnose."""
        return jnp.stack(list(self.present.values())).any(0)


@dataclasses.dataclass(frozen=True)
class Objectives:
    """The enabled objectives of `cfg` (config.validate checked their modalities)."""

    cfg: ObjectivesConfig
    setup: Setup

    def __post_init__(self):
        if self.cfg.diagnosis and not self.setup.num_labels:
            raise ConfigError("objectives.diagnosis is on but the dataset has no labels")

    @property
    def enabled(self) -> list[registry.Objective]:
        return registry.enabled(self.cfg)

    @property
    def weights(self) -> dict[str, float]:
        """Loss name -> weight, for every enabled objective."""
        return {name: getattr(self.cfg, o.name) for o in self.enabled
                for name in o.loss_names(self.cfg)}

    @property
    def uses_fusion(self) -> bool:
        return any(o.uses_fusion for o in self.enabled)

    def init_log_variances(self) -> dict | None:
        """Zero log-variances (unit weights) for uncertainty weighting, else None."""
        if self.cfg.weighting != "uncertainty":
            return None
        return {name: jnp.zeros((), jnp.float32) for name in self.weights}

    def total(self, losses: dict, log_variances: dict | None):
        return combine(losses, self.weights, log_variances)

    def kernel(self, mesh=None, axis=None):
        """The contrastive loss over the global batch: on `mesh`, or inside pmap's `axis`."""
        return contrastive.kernel(self.cfg.contrastive_loss, mesh, axis)

    def forward(self, module, batch: dict, rng: jax.Array) -> dict:
        """Run as model.apply(..., method=objectives.forward): the embeddings the batch
        losses need and a (total, count) term per per-example loss."""
        if self.uses_fusion:
            encode = module.modalities
        else:
            encode = sorted({m for o in self.enabled
                             for m in o.encodes(self.cfg, module.modalities)})
        f = Forward(module, batch, self.cfg, self.setup, encode, rng)
        terms = {}
        for objective in self.enabled:
            if objective.terms is not None:
                terms.update(objective.terms(f))
        return {"embeddings": f.embeddings, "present": f.present, "scale": module.scale(),
                "bias": module.logit_bias, "terms": terms}

    def losses(self, out: dict, kernel, reduce_sum=lambda x: x) -> dict:
        """Each enabled loss's value from a forward's output: the per-example terms as
        total / count (totals and counts summed across devices by `reduce_sum` first,
        under pmap), then the batch losses through `kernel`."""
        losses = {name: mean(jax.tree.map(reduce_sum, term))
                  for name, term in out["terms"].items()}
        for objective in self.enabled:
            if objective.batch_loss is not None:
                losses.update(objective.batch_loss(self.cfg, out, kernel))
        return losses
