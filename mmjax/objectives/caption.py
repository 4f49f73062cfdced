"""Teacher-forced report generation from the other modalities (the report decoder)."""

import jax.numpy as jnp
import optax

from mmjax.objectives.registry import Objective, register
from mmjax.objectives.terms import term


def caption_loss(logits, ids, mask, present=None):
    """Teacher forcing: logits at position t predict ids[t + 1]; scored where that next
    token is real (`mask`), so [SEP] is predicted and padding never is."""
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1].astype(jnp.float32), ids[:, 1:])
    return term(losses, mask[:, 1:], present)


def _terms(f) -> dict:
    logits = f.module.report_logits(f.batch, f.encoded)
    return {"caption": caption_loss(logits, f.batch["text"], f.batch["text_mask"],
                                    f.present["report"])}


register(Objective("caption", terms=_terms))
