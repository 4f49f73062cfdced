"""The learned temperature: each loss's initial value (CLIP's 0.07, SigLIP's t = 10 and
b = -10), and open_clip's clamp of the parameter after each update, under which the
temperature keeps its gradient at the bound and comes back down when the loss asks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import config as config_lib
from mmjax.nn.build import define
from mmjax.nn.model import MultimodalModel
from mmjax.objectives.compose import Vocab
from mmjax.objectives.contrastive import softmax_infonce
from mmjax.train.state import create
from mmjax.train.step import StepBuilder


def _definition(*settings):
    cfg = config_lib.apply(config_lib.Config(), settings)
    return define(cfg, Vocab(64, None), 0)


def _scalars(definition):
    """(scale, bias) at initialisation: the model's own parameters, nothing else built."""
    params = definition.module.init(jax.random.key(0),
                                    method=MultimodalModel.contrastive_scalars)["params"]
    return params, definition.contrastive_scalars(params)


@pytest.mark.parametrize("settings, scale, bias", [
    ((), 1 / 0.07, -10.0),
    (("objectives.contrastive_loss=sigmoid",), 10.0, -10.0),
    (("objectives.contrastive_loss=sigmoid", "model.init_temperature=0.05"), 20.0, -10.0),
    (("model.init_temperature=0.02", "model.init_bias=-5"), 50.0, -5.0),
])
def test_each_loss_starts_at_its_papers_temperature_and_bias(settings, scale, bias):
    _, (got_scale, got_bias) = _scalars(_definition(*settings))
    np.testing.assert_allclose(got_scale, scale, rtol=1e-6)
    assert float(got_bias) == bias


def test_an_initial_temperature_outside_the_bounds_is_refused():
    with pytest.raises(config_lib.ConfigError, match=r"logit scale 200 lies outside"):
        _definition("model.init_temperature=0.005")
    with pytest.raises(config_lib.ConfigError, match=r"model.min_logit_scale \(100\) must be"):
        _definition("model.min_logit_scale=100")


def test_the_temperature_keeps_learning_after_touching_the_clamp():
    """Matching pairs push the scale up to the bound; the clamp holds the parameter there
    with its gradient alive, and when the pairs stop matching it comes straight back down
    (a clip on exp(logit_scale) in the forward would leave it stuck past the bound)."""
    definition = _definition("model.max_logit_scale=20")
    params, _ = _scalars(definition)
    builder = StepBuilder(definition, optax.adam(0.05), optax.constant_schedule(0.05))
    state = create(params, builder.tx, seed=0)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 16))
    emb = jnp.asarray(emb / np.linalg.norm(emb, axis=1, keepdims=True), jnp.float32)

    def loss(params, texts):
        scale, _ = definition.contrastive_scalars(params)
        return softmax_infonce(emb, texts, scale)

    step = jax.jit(lambda state, texts: builder._update(
        state, jax.grad(loss)(state.params, texts), {}, loss(state.params, texts),
        {"grad_norm": jnp.float32(1.0)})[0])
    bound = math.log(20)
    for _ in range(30):  # matching pairs: a sharper softmax is always better
        state = step(state, emb)
        assert float(state.params["logit_scale"]) <= np.float32(bound)
    assert float(state.params["logit_scale"]) == np.float32(bound)
    assert float(jax.grad(loss)(state.params, emb)["logit_scale"]) < 0  # still pushing up
    shuffled = emb[::-1]  # pairs that no longer match: a flatter softmax is better
    assert float(jax.grad(loss)(state.params, shuffled)["logit_scale"]) > 0
    for _ in range(3):
        state = step(state, shuffled)
    assert float(state.params["logit_scale"]) < bound - 0.1


def test_the_clamp_keeps_the_lower_bound_too():
    definition = _definition("model.min_logit_scale=5")
    params, _ = _scalars(definition)
    low = {**params, "logit_scale": jnp.float32(0.0)}
    np.testing.assert_allclose(definition.clamp(low)["logit_scale"], math.log(5), rtol=1e-6)
    inside = {**params, "logit_scale": jnp.float32(2.0)}
    assert float(definition.clamp(inside)["logit_scale"]) == 2.0
