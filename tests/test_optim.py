"""Optimizer construction: weight-decay mask, layer-wise lr decay, frozen parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import ConfigError, OptimConfig
from mmjax.train import optim


def _params():
    tower = {"patch_embed": {"kernel": jnp.ones((4, 8))}, "cls": jnp.ones((1, 1, 8)),
             "transformer": {f"block_{i}": {"mlp": {"kernel": jnp.ones((8, 8)),
                                                   "bias": jnp.ones(8)}} for i in range(3)}}
    return {"encoders_image": tower, "proj_image": {"kernel": jnp.ones((8, 4))},
            "logit_scale": jnp.ones(())}


def test_layer_scales_decay_from_the_top_block_down():
    scales = optim.layer_scales(_params(), 0.5)
    tower = scales["encoders_image"]
    assert [tower["transformer"][f"block_{i}"]["mlp"]["kernel"] for i in range(3)] == [
        0.125, 0.25, 0.5]
    assert tower["patch_embed"]["kernel"] == tower["cls"] == 0.0625
    assert scales["proj_image"]["kernel"] == scales["logit_scale"] == 1.0


def _one_update(cfg: OptimConfig):
    params = _params()
    tx = optim.make_optimizer(cfg, 10, params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_layer_decay_scales_the_updates():
    cfg = OptimConfig(warmup_steps=0, weight_decay=0.0, grad_clip_norm=1e9)
    plain = _one_update(cfg)
    cfg.layer_decay = 0.5
    decayed = _one_update(cfg)
    def block(updates, i):
        return updates["encoders_image"]["transformer"][f"block_{i}"]["mlp"]["kernel"]

    np.testing.assert_allclose(block(decayed, 0), 0.125 * block(plain, 0), rtol=1e-6)
    np.testing.assert_allclose(decayed["proj_image"]["kernel"], plain["proj_image"]["kernel"])


def test_frozen_parameters_get_no_update_and_no_state():
    cfg = OptimConfig(warmup_steps=0, freeze="^encoders_image/")
    updates = _one_update(cfg)
    assert all(not np.any(u) for u in jax.tree.leaves(updates["encoders_image"]))
    assert np.any(updates["proj_image"]["kernel"])
    tx = optim.make_optimizer(cfg, 10, _params())
    state_sizes = sum(x.size for x in jax.tree.leaves(tx.init(_params())))
    trained = sum(x.size for k, v in _params().items() if k != "encoders_image"
                  for x in jax.tree.leaves(v))
    assert state_sizes <= 2 * trained + 8  # Adam moments of the trained ones, and counts


def test_a_bad_freeze_pattern_is_named():
    with pytest.raises(ConfigError, match="not a regular expression"):
        optim.make_optimizer(OptimConfig(freeze="(["), 10, _params())
