"""BERT masked language modelling of the report."""

import jax.numpy as jnp
import numpy as np
import optax

from mmjax.objectives.registry import Objective, register
from mmjax.objectives.terms import term, uniform_per_example

MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the selected tokens; the rest stay as they are


def mask_tokens(rngs, ids, mask, mask_id: int, vocab_size: int, special_ids, probability=0.15):
    """BERT masking. Selects each real (`mask`) non-special token with `probability`;
    of those, 80% become `mask_id`, 10% a random non-special token, 10% stay unchanged,
    so the model cannot tell from the input which tokens it is scored on.

    `rngs` holds one key per example [B]. `special_ids` are Python ints (a loaded BERT
    vocabulary has its own ids). Returns (inputs, selected), selected bool [B, L]
    marking the tokens to predict.
    """
    draws = uniform_per_example(rngs, (3, ids.shape[1]))  # independent per token
    select, action, pick = jnp.moveaxis(draws, 1, 0)
    special = jnp.isin(ids, jnp.asarray(special_ids, ids.dtype))
    selected = mask & ~special & (select < probability)
    ordinary = jnp.asarray(np.setdiff1d(np.arange(vocab_size), special_ids), ids.dtype)
    random_ids = ordinary[jnp.minimum((pick * ordinary.size).astype(jnp.int32), ordinary.size - 1)]
    replaced = jnp.where(action < MASK_FRACTION, jnp.asarray(mask_id, ids.dtype),
                         jnp.where(action < MASK_FRACTION + RANDOM_FRACTION, random_ids, ids))
    return jnp.where(selected, replaced, ids), selected


def mlm_loss(logits, targets, selected, present=None):
    """Cross-entropy of the original ids `targets` at the selected tokens of present
    examples."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                             targets)
    return term(losses, selected, present)


def _terms(f) -> dict:
    vocab, batch = f.setup.vocab, f.batch
    inputs, selected = mask_tokens(
        f.per_example(f.key(0)), batch["text"], batch["text_mask"], vocab.mask_id,
        vocab.size, vocab.special_ids, f.cfg.mlm_probability)
    _, tokens, _ = f.module.encode("report", {**batch, "text": inputs})
    return {"mlm": mlm_loss(f.module.mlm_logits(tokens), batch["text"], selected,
                            f.present["report"])}


register(Objective("mlm", terms=_terms))
