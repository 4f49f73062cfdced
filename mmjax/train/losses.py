"""The objectives a config trains, and the one forward pass that computes them all.

`Objectives.forward` runs inside `model.apply`: it encodes each modality once and
returns every per-example objective as a (total, count) term (objectives/terms.py)
plus the embeddings the contrastive losses need. Contrastive losses are left to the
caller because they couple the whole global batch: the train step computes them with
explicit collectives, and gradient accumulation caches their embeddings.
"""

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config import ConfigError, ObjectivesConfig
from mmjax.objectives import masked, matching, supervised
from mmjax.objectives.terms import mean
from mmjax.objectives.weighting import combine

DIAGNOSIS_LOSSES = ("bce", "focal")
CONTRASTIVE_LOSSES = ("softmax", "sigmoid")
WEIGHTINGS = ("fixed", "uncertainty")
LOG_VARIANCES = "log_variances"  # the uncertainty weights' key beside the model params


def _pair(text: str, key: str) -> tuple[str, str]:
    parts = tuple(text.split("-"))
    if len(parts) != 2 or parts[0] == parts[1]:
        raise ConfigError(f"{key}: '{text}' is not a pair of two modalities like 'image-report'")
    return parts


@dataclasses.dataclass(frozen=True)
class Objectives:
    """The enabled objectives of `cfg`, checked against the data's modalities."""

    cfg: ObjectivesConfig
    modalities: tuple[str, ...]  # what the data provides (data.modalities)
    vocab_size: int
    mask_id: int  # the tokenizer's [MASK]
    special_ids: tuple[int, ...]  # never masked or sampled by MLM
    num_labels: int
    positive_weight: tuple[float, ...] | None = None  # diagnosis class weights

    def __post_init__(self):
        cfg = self.cfg
        if cfg.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ConfigError(f"objectives.contrastive_loss '{cfg.contrastive_loss}' is unknown;"
                              f" choose from {', '.join(CONTRASTIVE_LOSSES)}")
        if cfg.diagnosis_loss not in DIAGNOSIS_LOSSES:
            raise ConfigError(f"objectives.diagnosis_loss '{cfg.diagnosis_loss}' is unknown;"
                              f" choose from {', '.join(DIAGNOSIS_LOSSES)}")
        if cfg.weighting not in WEIGHTINGS:
            raise ConfigError(f"objectives.weighting '{cfg.weighting}' is unknown;"
                              f" choose from {', '.join(WEIGHTINGS)}")
        if not self.weights:
            raise ConfigError("every objectives.* weight is 0: nothing to train")
        for key, needed in self._needed_modalities().items():
            missing = [m for m in needed if m not in self.modalities]
            if missing:
                raise ConfigError(f"{key} needs {', '.join(missing)} but data.modalities is "
                                  f"{', '.join(self.modalities)}")
        if cfg.diagnosis and not self.num_labels:
            raise ConfigError("objectives.diagnosis is on but the dataset has no labels")

    def _needed_modalities(self) -> dict[str, tuple[str, ...]]:
        cfg, needed = self.cfg, {}
        if cfg.contrastive:
            needed["objectives.contrastive_pairs"] = tuple(
                m for pair in self.pairs for m in pair)
        if cfg.mlm or cfg.caption:
            needed["objectives.mlm/caption"] = ("report",)
        if cfg.mae:
            needed["objectives.mae_modalities"] = tuple(cfg.mae_modalities)
        if cfg.matching:
            needed["objectives.matching_pair"] = _pair(cfg.matching_pair,
                                                       "objectives.matching_pair")
        return needed

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(_pair(p, "objectives.contrastive_pairs") for p in self.cfg.contrastive_pairs)

    @property
    def weights(self) -> dict[str, float]:
        """Loss name -> weight, for every enabled objective."""
        cfg, weights = self.cfg, {}
        if cfg.contrastive:
            weights.update({f"contrastive/{a}-{b}": cfg.contrastive for a, b in self.pairs})
        if cfg.mae:
            weights.update({f"mae/{m}": cfg.mae for m in cfg.mae_modalities})
        for name in ("mlm", "matching", "caption", "diagnosis", "risk"):
            if getattr(cfg, name):
                weights[name] = getattr(cfg, name)
        return weights

    @property
    def uses_fusion(self) -> bool:
        return bool(self.cfg.matching or self.cfg.diagnosis or self.cfg.risk)

    def init_log_variances(self) -> dict | None:
        """Zero log-variances (unit weights) for uncertainty weighting, else None."""
        if self.cfg.weighting != "uncertainty":
            return None
        return {name: jnp.zeros((), jnp.float32) for name in self.weights}

    def total(self, losses: dict, log_variances: dict | None):
        return combine(losses, self.weights, log_variances)

    # ---- The forward pass, run as model.apply(..., method=objectives.forward).

    def forward(self, module, batch: dict, rng: jax.Array) -> dict:
        """Embeddings for the contrastive pairs, and a (total, count) term per other loss."""
        cfg = self.cfg
        size = batch["text" if "report" in self.modalities else self.modalities[0]].shape[0]
        present = {m: batch.get(f"has_{m}", jnp.ones(size, bool)) for m in self.modalities}
        encode = (self.modalities if self.uses_fusion
                  else sorted({m for pair in self.pairs for m in pair} if cfg.contrastive
                              else ()))
        encoded = {m: module.encode(m, batch) for m in encode}
        embeddings = {m: module.embed(m, encoded[m][0]) for m in encoded}
        rngs = dict(zip(("mlm", "mae", "matching"), jax.random.split(rng, 3), strict=True))
        # One key per example from its row in the global batch: masks are the same however
        # the batch is split over devices or micro-batches.
        row = batch.get("row", jnp.arange(size))

        def per_example(key):
            return jax.vmap(jax.random.fold_in, (None, 0))(key, row)

        terms = {}
        if cfg.mlm:
            terms["mlm"] = self._mlm(module, batch, present["report"],
                                     per_example(rngs["mlm"]))
        for i, m in enumerate(cfg.mae_modalities if cfg.mae else ()):
            keep, hidden = masked.random_keep(per_example(jax.random.fold_in(rngs["mae"], i)),
                                              module.num_patches(m, batch), cfg.mae_mask_ratio)
            predictions, targets = module.mae(m, batch, keep)
            terms[f"mae/{m}"] = masked.mae_loss(predictions, targets, hidden, present[m])
        if cfg.caption:
            logits = module.report_logits(batch, encoded)
            terms["caption"] = masked.caption_loss(logits, batch["text"], batch["text_mask"],
                                                   present["report"])
        if cfg.matching:
            terms["matching"] = self._matching(module, batch, encoded, embeddings, present,
                                               rngs["matching"])
        if cfg.diagnosis or cfg.risk:
            fused = module.fusion(encoded, embeddings, present)
            # A patient with none of the model's inputs has nothing to be diagnosed from.
            seen = jnp.stack(list(present.values())).any(0)
            if cfg.diagnosis:
                weight = (None if self.positive_weight is None
                          else jnp.asarray(self.positive_weight, jnp.float32))
                terms["diagnosis"] = supervised.diagnosis_loss(
                    module.diagnosis(fused), batch["labels"], batch["has_labels"] & seen,
                    cfg.diagnosis_loss, weight, cfg.focal_gamma)
            if cfg.risk:
                terms["risk"] = supervised.risk_loss(module.risk(fused)[:, 0], batch["risk"],
                                                     batch["has_risk"] & seen)
        return {"embeddings": embeddings, "present": present, "scale": module.scale(),
                "bias": module.logit_bias, "terms": terms}

    def _mlm(self, module, batch, present, rngs):
        inputs, selected = masked.mask_tokens(
            rngs, batch["text"], batch["text_mask"], self.mask_id, self.vocab_size,
            self.special_ids, self.cfg.mlm_probability)
        _, tokens, _ = module.encode("report", {**batch, "text": inputs})
        return masked.mlm_loss(module.mlm_logits(tokens), batch["text"], selected, present)

    def _matching(self, module, batch, encoded, embeddings, present, rng):
        """Matched pairs against the hardest-looking wrong partner each way (ALBEF)."""
        a, b = _pair(self.cfg.matching_pair, "objectives.matching_pair")
        valid = present[a] & present[b]
        similarity = module.scale() * embeddings[a] @ embeddings[b].T
        # False negatives are excluded: word-for-word identical reports, and (as in
        # MedCLIP) studies labelled with exactly the same findings, whose reports say the
        # same thing in other words and which no image could tell apart.
        labels, labelled = batch["labels"], batch["has_labels"]
        same = (labelled[:, None] & labelled[None, :]
                & jnp.all(labels[:, None, :] == labels[None, :, :], axis=-1))
        if "report" in (a, b):
            text = jnp.where(batch["text_mask"], batch["text"], -1)
            same |= jnp.all(text[:, None, :] == text[None, :, :], axis=-1)
        negative_b, negative_a, has_negative = matching.hard_negatives(rng, similarity, valid,
                                                                       same)
        only_pair = {m: jnp.zeros_like(valid) for m in present}

        def logits(index_a, index_b, mask):
            """Matching logits of a's rows index_a with b's rows index_b."""
            enc, emb = dict(encoded), dict(embeddings)
            for m, rows in ((a, index_a), (b, index_b)):
                enc[m] = tuple(x[rows] for x in encoded[m])
                emb[m] = embeddings[m][rows]
            return module.matching(module.fusion(enc, emb, {**only_pair, a: mask, b: mask}))

        rows = jnp.arange(valid.shape[0])
        return matching.itm_loss(
            logits(rows, rows, valid),
            jnp.concatenate([logits(rows, negative_b, has_negative),
                             logits(negative_a, rows, has_negative)]),
            valid, jnp.concatenate([has_negative, has_negative]))


def loss_values(objectives: Objectives, out: dict, contrastive_fn, reduce_sum=lambda x: x):
    """Each enabled loss's value from a forward's output: contrastive pairs through
    `contrastive_fn(a_emb, b_emb, scale, bias, valid)`, the rest as total / count, with
    totals and counts summed across devices by `reduce_sum` (pmap) first."""
    losses = {name: mean(jax.tree.map(reduce_sum, term)) for name, term in out["terms"].items()}
    emb, present = out["embeddings"], out["present"]
    for a, b in objectives.pairs if objectives.cfg.contrastive else ():
        losses[f"contrastive/{a}-{b}"] = contrastive_fn(
            emb[a], emb[b], out["scale"], out["bias"], present[a] & present[b])
    return losses
