"""Report generation: greedy and beam search over the report decoder's KV cache.

Both run under jit with the model closed over, e.g.
`jax.jit(functools.partial(greedy, model, max_len=96, bos_id=2, eos_id=3, pad_id=0))`.
Each returns (tokens int32 [B, max_len]: bos, the report, eos, then pad;
log_likelihood float32 [B]: the summed log-probabilities of the tokens after bos
through eos). A report that reaches max_len without eos gets eos as its last token.
"""

import jax
import jax.numpy as jnp
from jax import lax

from mmjax.nn.model import batch_size


def _start(model, variables, batch, max_len, copies=1):
    """The cache primed on the batch, each example's rows repeated `copies` times."""
    _, state = model.apply(variables, batch, max_len,
                           method=model.init_report_cache, mutable=["cache"])
    return _rows(state["cache"], lambda x: jnp.repeat(x, copies, axis=0))


def _rows(cache, fn):
    """`fn` on every per-example array of the cache; the scalar positions are shared."""
    return jax.tree.map(lambda x: fn(x) if x.ndim else x, cache)


def _step(model, variables, cache, ids, t, max_len, eos_id):
    """Log-probabilities [N, vocab] of the token at position t + 1 after ids at t; at
    the last position only eos may come."""
    logits, state = model.apply({**variables, "cache": cache}, ids,
                                method=model.decode_step, mutable=["cache"])
    logp = jax.nn.log_softmax(logits)
    only_eos = jnp.where(jnp.arange(logp.shape[-1]) == eos_id, logp, -jnp.inf)
    return jnp.where(t + 1 == max_len - 1, only_eos, logp), state["cache"]


def greedy(model, variables, batch, *, max_len, bos_id, eos_id, pad_id):
    """The most likely next token at every step, until eos."""
    cache = _start(model, variables, batch, max_len)
    size = batch_size(batch)
    tokens = jnp.full((size, max_len), pad_id, jnp.int32).at[:, 0].set(bos_id)

    def body(state):
        t, tokens, cache, score, done = state
        logp, cache = _step(model, variables, cache, tokens[:, t], t, max_len, eos_id)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, token[:, None], 1)[:, 0])
        token = jnp.where(done, pad_id, token)
        return t + 1, tokens.at[:, t + 1].set(token), cache, score, done | (token == eos_id)

    def decoding(state):
        t, *_, done = state
        return (t < max_len - 1) & ~done.all()

    state = (0, tokens, cache, jnp.zeros(size, jnp.float32), jnp.zeros(size, bool))
    _, tokens, _, score, _ = lax.while_loop(decoding, body, state)
    return tokens, score


def beam_search(model, variables, batch, *, max_len, beam_size, bos_id, eos_id, pad_id,
                length_penalty=0.0):
    """Keeps the `beam_size` best hypotheses per example, flattened into the batch.

    Hypotheses are ranked by log-likelihood / length ** length_penalty (with 0, the
    log-likelihood itself). A finished one stays in the beam (extended by pad at no
    cost) until better ones push it out, and the search ends when all are finished.
    The best that ever finished is returned: the ones that pushed it out may end worse.
    """
    size = batch_size(batch)
    cache = _start(model, variables, batch, max_len, beam_size)
    tokens = jnp.full((size * beam_size, max_len), pad_id, jnp.int32).at[:, 0].set(bos_id)
    # All beams start as the same prompt: only the first may extend it, or they'd tie.
    score = jnp.where(jnp.arange(beam_size) == 0, 0.0, -jnp.inf) * jnp.ones((size, 1))
    length, done = jnp.zeros((size, beam_size), jnp.int32), jnp.zeros((size, beam_size), bool)
    best = tokens[::beam_size], jnp.zeros(size), jnp.full(size, -jnp.inf)  # tokens, score, rank
    examples = jnp.arange(size)

    def rank(score, length):
        return score / jnp.maximum(length, 1).astype(jnp.float32) ** length_penalty

    def body(state):
        t, tokens, cache, score, length, done, (best_tokens, best_score, best_rank) = state
        logp, cache = _step(model, variables, cache, tokens[:, t], t, max_len, eos_id)
        logp = logp.reshape(size, beam_size, -1)
        vocab = logp.shape[-1]
        keep = jnp.where(jnp.arange(vocab) == pad_id, 0.0, -jnp.inf)  # a finished beam
        candidates = score[..., None] + jnp.where(done[..., None], keep, logp)
        length = jnp.where(done, length, t + 1)
        _, top = lax.top_k(rank(candidates, length[..., None]).reshape(size, -1), beam_size)
        parent, token = top // vocab, (top % vocab).astype(jnp.int32)
        score = jnp.take_along_axis(candidates.reshape(size, -1), top, 1)
        length = jnp.take_along_axis(length, parent, 1)
        was_done = jnp.take_along_axis(done, parent, 1)
        done = was_done | (token == eos_id)
        rows = (examples[:, None] * beam_size + parent).reshape(-1)
        tokens = tokens[rows].at[:, t + 1].set(token.reshape(-1))
        # The best hypothesis that finished at this step, if it beats the best so far.
        new = jnp.where(done & ~was_done, rank(score, length), -jnp.inf)
        k = jnp.argmax(new, axis=1)
        better = new[examples, k] > best_rank
        best = (jnp.where(better[:, None], tokens[examples * beam_size + k], best_tokens),
                jnp.where(better, score[examples, k], best_score),
                jnp.maximum(new[examples, k], best_rank))
        return t + 1, tokens, _rows(cache, lambda x: x[rows]), score, length, done, best

    def searching(state):
        t, *_, done, _ = state
        return (t < max_len - 1) & ~done.all()

    state = lax.while_loop(searching, body, (0, tokens, cache, score, length, done, best))
    best_tokens, best_score, _ = state[-1]
    return best_tokens, best_score
