"""Contrastive losses: softmax InfoNCE (CLIP) and sigmoid (SigLIP), over pairs that exist.

The plain functions compute the loss of one global batch. The `sharded_*` versions do the
same over a batch split on mesh axes with explicit communication (jax.shard_map): each
device scores only its own rows, against gathered columns (softmax, O(n*N) logits memory
instead of O(N^2)) or against text chunks passed round a ring with ppermute (sigmoid,
O(n^2)). Gradients flow through the collectives, so they equal the global-batch gradients.
The per-device bodies (`*_local`) are public so the pmap strategy runs the same code;
`kernel` picks the one a config and a parallel strategy train with.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from mmjax.objectives.registry import Objective, pair, register
from mmjax.parallel.mesh import BATCH_AXES

# Finite, so masked entries keep finite gradients (an -inf would turn into NaN).
_MASKED_LOGIT = -1e9


def _all_valid(emb):
    return jnp.ones(emb.shape[0], bool)


def _softmax_terms(rows, columns, scale, labels, row_valid, column_valid):
    """Per-row cross-entropy of rows against every column; invalid columns never compete."""
    logits = scale * rows @ columns.T
    logits = jnp.where(row_valid[:, None] & column_valid[None, :], logits, _MASKED_LOGIT)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def softmax_infonce(image_emb, text_emb, scale, valid=None):
    """Mean over valid pairs of image->text and text->image cross-entropy; pair i matches
    pair i. `valid` [B] marks pairs where both modalities are present; the others are
    neither positives nor negatives."""
    valid = _all_valid(image_emb) if valid is None else valid
    labels = jnp.arange(image_emb.shape[0])
    per_pair = 0.5 * (_softmax_terms(image_emb, text_emb, scale, labels, valid, valid)
                      + _softmax_terms(text_emb, image_emb, scale, labels, valid, valid))
    return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(valid.sum(), 1)


def _sigmoid_terms(rows, columns, scale, bias, positive, row_valid, column_valid):
    """Sum of -log sigmoid(z * logit) over valid pairs; z = +1 on `positive`, else -1."""
    logits = scale * rows @ columns.T + bias
    signs = jnp.where(positive, 1.0, -1.0)
    pair = row_valid[:, None] & column_valid[None, :]
    return -jnp.sum(jnp.where(pair, jax.nn.log_sigmoid(signs * logits), 0.0))


def sigmoid_loss(image_emb, text_emb, scale, bias, valid=None):
    """SigLIP: every pair is an independent binary decision, normalised per valid image."""
    valid = _all_valid(image_emb) if valid is None else valid
    positive = jnp.eye(image_emb.shape[0], dtype=bool)
    total = _sigmoid_terms(image_emb, text_emb, scale, bias, positive, valid, valid)
    return total / jnp.maximum(valid.sum(), 1)


def softmax_infonce_local(axis=BATCH_AXES):
    """Per-device softmax_infonce of a batch split over `axis` (a name or a tuple, whose
    devices are ordered as the batch is): local rows against all-gathered columns."""
    def local(image_emb, text_emb, scale, valid):
        gather = lambda x: jax.lax.all_gather(x, axis, tiled=True)  # noqa: E731
        all_images, all_texts, all_valid = gather(image_emb), gather(text_emb), gather(valid)
        offset = jax.lax.axis_index(axis) * image_emb.shape[0]
        labels = offset + jnp.arange(image_emb.shape[0])
        per_pair = 0.5 * (
            _softmax_terms(image_emb, all_texts, scale, labels, valid, all_valid)
            + _softmax_terms(text_emb, all_images, scale, labels, valid, all_valid))
        total = jax.lax.psum(jnp.sum(jnp.where(valid, per_pair, 0.0)), axis)
        return total / jnp.maximum(jax.lax.psum(valid.sum(), axis), 1)

    return local


def sigmoid_loss_local(axis=BATCH_AXES):
    """Per-device sigmoid_loss of a batch split over `axis`: text chunks travel round a
    ring (in the linear order of the axes), so no device holds more than two chunks."""
    def local(image_emb, text_emb, scale, bias, valid):
        size = jax.lax.axis_size(axis)
        ring = [(i, (i + 1) % size) for i in range(size)]
        own = jnp.eye(image_emb.shape[0], dtype=bool)
        total = _sigmoid_terms(image_emb, text_emb, scale, bias, own, valid, valid)
        texts, text_valid = text_emb, valid
        for _ in range(size - 1):  # every other device's texts are negatives
            texts = jax.lax.ppermute(texts, axis, ring)
            text_valid = jax.lax.ppermute(text_valid, axis, ring)
            total += _sigmoid_terms(image_emb, texts, scale, bias, jnp.zeros_like(own), valid,
                                    text_valid)
        return jax.lax.psum(total, axis) / jnp.maximum(jax.lax.psum(valid.sum(), axis), 1)

    return local


def sharded_softmax_infonce(mesh, axis=BATCH_AXES):
    """softmax_infonce of a batch sharded over the mesh axes `axis`."""
    batch, replicated = PartitionSpec(axis), PartitionSpec()
    return jax.shard_map(softmax_infonce_local(axis), mesh=mesh,
                         in_specs=(batch, batch, replicated, batch), out_specs=replicated)


def sharded_sigmoid_loss(mesh, axis=BATCH_AXES):
    """sigmoid_loss of a batch sharded over the mesh axes `axis`."""
    batch, replicated = PartitionSpec(axis), PartitionSpec()
    return jax.shard_map(sigmoid_loss_local(axis), mesh=mesh,
                         in_specs=(batch, batch, replicated, replicated, batch),
                         out_specs=replicated)


def kernel(kind: str, mesh=None, axis=None):
    """(a, b, scale, bias, valid) -> the `kind` loss over the global batch: shard_map over
    `mesh`'s batch axes, or, without a mesh, the per-device body for use inside pmap over
    the axis named `axis`."""
    if kind == "softmax":
        fn = sharded_softmax_infonce(mesh) if mesh is not None else softmax_infonce_local(axis)
        return lambda a, b, scale, bias, valid: fn(a, b, scale, valid)
    return sharded_sigmoid_loss(mesh) if mesh is not None else sigmoid_loss_local(axis)


def _pairs(cfg) -> tuple[tuple[str, str], ...]:
    return tuple(pair(p) for p in cfg.contrastive_pairs)


def _batch_loss(cfg, out: dict, loss_kernel) -> dict:
    emb, present = out["embeddings"], out["present"]
    return {f"contrastive/{a}-{b}": loss_kernel(emb[a], emb[b], out["scale"], out["bias"],
                                                present[a] & present[b])
            for a, b in _pairs(cfg)}


register(Objective(
    "contrastive", losses=lambda cfg: tuple(f"contrastive/{a}-{b}" for a, b in _pairs(cfg)),
    batch_loss=_batch_loss, encodes=lambda cfg, modalities: tuple(
        sorted({m for p in _pairs(cfg) for m in p}))))
