import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import ModelConfig, SignalConfig, TextConfig, VideoConfig, ViTConfig
from mmjax.eval import decoding
from mmjax.nn.model import MultimodalModel

B, SIZE, FRAMES, SAMPLES, LENGTH, VOCAB = 3, 16, 4, 100, 12, 50
PAD, BOS, EOS = 0, 2, 3
SMALL = {"width": 32, "depth": 1, "num_heads": 4, "mlp_dim": 64}
CONFIG = ModelConfig(
    image=ViTConfig(patch_size=4, **SMALL), text=TextConfig(**SMALL),
    video=VideoConfig(tubelet_frames=2, patch_size=8, **SMALL),
    signal=SignalConfig(patch_size=25, **SMALL),
    decoder=dataclasses.replace(ModelConfig().decoder, width=32, depth=2, mlp_dim=64),
    embed_dim=16)


def _batch(seed=0):
    """Example 0 has every modality, example 1 none (its report decoder sees only the
    null memory), example 2 only an image."""
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.normal(size=(B, SIZE, SIZE, 1)), jnp.float32),
        "video": jnp.asarray(rng.normal(size=(B, FRAMES, SIZE, SIZE, 1)), jnp.float32),
        "signal": jnp.asarray(rng.normal(size=(B, SAMPLES, 12)), jnp.float32),
        "signal_leads": jnp.ones((B, 12), bool),
        "has_image": jnp.array([True, False, True]),
        "has_video": jnp.array([True, False, False]),
        "has_signal": jnp.array([True, False, False]),
        "text": jnp.asarray(rng.integers(4, VOCAB, (B, LENGTH)), jnp.int32).at[:, 0].set(BOS),
        "text_mask": jnp.ones((B, LENGTH), bool),
    }


@functools.cache
def _model():
    """A random model whose positions table has LENGTH rows, and jitted teacher forcing.

    Its logits are scaled up so that its next-token distributions are peaked like a
    trained model's, not near uniform.
    """
    model = MultimodalModel(CONFIG, VOCAB, ("image", "video", "signal", "report"))
    params = nn.meta.unbox(jax.jit(lambda rng: model.init(
        rng, _batch(), method=model.report_logits))(jax.random.key(0))["params"])
    embed = params["encoders_report"]["token_embed"]["embedding"]
    params["encoders_report"]["token_embed"]["embedding"] = embed * 20
    logits = jax.jit(lambda batch: model.apply({"params": params}, batch,
                                               method=model.report_logits))
    return model, params, logits


@functools.cache
def _decode(search, max_len=LENGTH, **kwargs):
    """`search` under jit, with eos an argument so that tests can change it."""
    model, params, _ = _model()
    run = jax.jit(lambda params, batch, eos: search(
        model, params, batch, max_len=max_len, bos_id=BOS, eos_id=eos, pad_id=PAD, **kwargs))
    return lambda batch, eos=EOS: run({"params": params}, batch, eos)


def test_cached_steps_match_teacher_forcing():
    """Also for a cache shorter than the positions table."""
    model, params, logits = _model()
    batch, steps = _batch(), LENGTH - 2

    @jax.jit
    def cached(batch, ids):
        _, state = model.apply({"params": params}, batch, steps,
                               method=model.init_report_cache, mutable=["cache"])

        def step(cache, ids):
            logits, state = model.apply({"params": params, "cache": cache}, ids,
                                        method=model.decode_step, mutable=["cache"])
            return state["cache"], logits

        return jax.lax.scan(step, state["cache"], ids.T)[1].swapaxes(0, 1)

    no_text = {k: v for k, v in batch.items() if not k.startswith("text")}
    got = cached(no_text, batch["text"][:, :steps])
    np.testing.assert_allclose(got, logits(batch)[:, :steps], atol=1e-5, rtol=1e-5)


def _naive_greedy(logits, batch, max_len):
    """Greedy by re-running teacher forcing on the whole prefix at every step."""
    tokens = np.full((B, max_len), PAD, np.int32)
    tokens[:, 0] = BOS
    score, done = np.zeros(B), np.zeros(B, bool)
    for t in range(max_len - 1):
        text = {"text": jnp.asarray(tokens), "text_mask": jnp.ones((B, max_len), bool)}
        logp = np.asarray(jax.nn.log_softmax(logits(dict(batch, **text))[:, t]))
        token = EOS * np.ones(B, np.int32) if t == max_len - 2 else logp.argmax(-1)
        score += np.where(done, 0, logp[np.arange(B), token])
        tokens[:, t + 1] = np.where(done, PAD, token)
        done |= tokens[:, t + 1] == EOS
    return tokens, score


def test_greedy_under_jit_matches_a_loop_without_cache():
    tokens, score = _decode(decoding.greedy)(_batch())
    want_tokens, want_score = _naive_greedy(_model()[2], _batch(), LENGTH)
    assert tokens.dtype == jnp.int32 and score.dtype == jnp.float32
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(score, want_score, rtol=1e-5)


def test_beam_search_finds_likelier_reports_and_one_beam_is_greedy():
    batch = _batch()
    greedy_tokens, greedy_score = _decode(decoding.greedy)(batch)
    one_tokens, one_score = _decode(decoding.beam_search, beam_size=1)(batch)
    np.testing.assert_array_equal(one_tokens, greedy_tokens)
    np.testing.assert_allclose(one_score, greedy_score, rtol=1e-6)
    tokens, score = _decode(decoding.beam_search, beam_size=4, length_penalty=0.0)(batch)
    assert np.all(score >= greedy_score - 1e-5), (score, greedy_score)
    assert np.any(score > greedy_score + 1e-3)  # the search found something better
    _assert_reports(tokens, score, EOS)


def _assert_reports(tokens, score, eos):
    """Each report is bos, tokens, eos then pad, and `score` is its teacher-forced
    log-likelihood through eos. Returns where each report's eos is."""
    tokens = np.asarray(tokens)
    ends = (tokens == eos).argmax(1)
    assert np.all(tokens[:, 0] == BOS) and np.all(tokens[np.arange(B), ends] == eos)
    after = np.arange(LENGTH)[None] > ends[:, None]
    assert np.all(tokens[after] == PAD)
    logits = _model()[2](dict(_batch(), text=jnp.asarray(tokens)))
    logp = np.asarray(jax.nn.log_softmax(logits))[:, :-1]
    per_token = np.take_along_axis(logp, tokens[:, 1:, None], 2)[..., 0]
    np.testing.assert_allclose(score, (per_token * ~after[:, 1:]).sum(1), rtol=1e-5)
    return ends


@pytest.mark.parametrize("beam_size,length_penalty", [(0, None), (4, 0.0), (4, 1.0)])
def test_reports_end_at_eos_and_nothing_after_it_counts(beam_size, length_penalty):
    """With eos the token greedy emits third for example 0, that report ends early;
    the steps that follow leave finished reports' tokens and likelihoods alone."""
    batch = _batch()
    greedy_tokens, _ = _decode(decoding.greedy)(batch)
    eos = int(greedy_tokens[0, 3])
    search = _decode(decoding.beam_search, beam_size=beam_size,
                     length_penalty=length_penalty) if beam_size else _decode(decoding.greedy)
    tokens, score = search(batch, eos)
    ends = _assert_reports(tokens, score, eos)
    assert ends.min() < LENGTH - 1  # a report ended before the forced last eos
    if not beam_size:
        assert ends[0] <= 3
        np.testing.assert_array_equal(tokens[0, :ends[0]], greedy_tokens[0, :ends[0]])
