"""Diagnosis and risk losses, class weights, and combining task losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.objectives import diagnosis
from mmjax.objectives.risk import risk_loss
from mmjax.objectives.terms import mean
from mmjax.objectives.weighting import combine

diagnosis_loss = jax.jit(diagnosis.diagnosis_loss, static_argnames="kind")


def _diagnosis():
    """Logits and 0/1 labels [5, 4]; examples 1 and 4 are unlabelled."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(3.0 * rng.normal(size=(5, 4)), jnp.float32)
    labels = jnp.asarray(rng.random((5, 4)) < 0.3, jnp.float32)
    return logits, labels, jnp.array([True, False, True, True, False])


def _bce(logits, labels, weight=1.0):
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    return -(weight * labels * np.log(p) + (1 - labels) * np.log(1 - p))


def test_positive_weights_on_known_prevalences():
    weights = diagnosis.positive_weights([0.5, 0.1, 0.001, 0.0, 1.0], max_weight=100.0)
    np.testing.assert_allclose(weights, [1.0, 9.0, 100.0, 100.0, 0.01], rtol=1e-5)


def test_weighted_bce_matches_numpy_over_labelled_examples_only():
    logits, labels, has_labels = _diagnosis()
    weight = np.array([1.0, 4.0, 0.5, 9.0], np.float32)
    total, count = diagnosis_loss(logits, labels, has_labels,
                                  positive_weight=jnp.asarray(weight))
    labelled = np.asarray(has_labels)
    expected = _bce(logits, np.asarray(labels), weight)[labelled].sum()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(count) == labelled.sum() * 4
    noisy = jnp.where(has_labels[:, None], logits, 50.0)
    assert float(diagnosis_loss(noisy, labels, has_labels)[0]) == pytest.approx(
        float(diagnosis_loss(logits, labels, has_labels)[0]), rel=1e-6)


def test_focal_is_bce_at_gamma_zero_and_smaller_when_confidently_right():
    logits, labels, has_labels = _diagnosis()
    bce = diagnosis_loss(logits, labels, has_labels)
    focal = diagnosis_loss(logits, labels, has_labels, "focal", gamma=0.0)
    np.testing.assert_allclose(focal, bce, rtol=1e-6)
    confident = jnp.where(labels > 0, 4.0, -4.0)
    bce = diagnosis_loss(confident, labels, has_labels)[0]
    focal = diagnosis_loss(confident, labels, has_labels, "focal")[0]
    assert float(focal) < 1e-3 * float(bce)


def test_focal_gradients_stay_finite_for_saturated_logits():
    labels, has_labels = jnp.array([[1.0, 0.0]]), jnp.array([True])
    gradient = jax.jit(jax.grad(lambda x, gamma: diagnosis_loss(
        x, labels, has_labels, "focal", gamma=gamma)[0]))
    for gamma in (0.0, 2.0):
        assert np.isfinite(gradient(jnp.array([[200.0, -200.0]]), gamma)).all()


def test_diagnosis_accumulates_exactly_over_micro_batches():
    batch = _diagnosis()
    parts = [diagnosis_loss(*(x[:2] for x in batch)),
             diagnosis_loss(*(x[2:] for x in batch))]
    summed = (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])
    whole = mean(diagnosis_loss(*batch))
    assert float(whole) == pytest.approx(float(mean(summed)), rel=1e-6)
    assert float(whole) != pytest.approx(float(mean(parts[0]) + mean(parts[1])) / 2, rel=1e-3)


def test_risk_loss_on_binary_outcomes():
    logit = jnp.array([2.0, -1.0, 0.5, 3.0])
    risk = jnp.array([1, 0, 0, 1], jnp.uint8)
    has_risk = jnp.array([True, True, True, False])
    total, count = jax.jit(risk_loss)(logit, risk, has_risk)
    expected = _bce(logit, np.asarray(risk, float))[:3].sum()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(count) == 3


LOSSES = {"mlm": jnp.float32(2.0), "mae": jnp.float32(0.5)}
WEIGHTS = {"mlm": 1.0, "mae": 3.0}


def test_combine_fixed_and_uncertainty_weights():
    assert float(combine(LOSSES, WEIGHTS)) == pytest.approx(3.5)
    zeros = {k: jnp.float32(0.0) for k in LOSSES}
    assert float(combine(LOSSES, WEIGHTS, zeros)) == pytest.approx(3.5)
    at_optimum = {k: jnp.log(loss) for k, loss in LOSSES.items()}
    gradient = jax.jit(jax.grad(lambda s: combine(LOSSES, WEIGHTS, s)))
    for k in LOSSES:
        assert float(gradient(at_optimum)[k]) == pytest.approx(0.0, abs=1e-6)
        assert float(gradient(zeros)[k]) != 0.0


def test_combine_names_missing_and_extra_keys():
    with pytest.raises(ValueError, match="'mae'"):
        combine(LOSSES, {"mlm": 1.0})
    with pytest.raises(ValueError, match="'itm'"):
        combine(LOSSES, {**WEIGHTS, "itm": 1.0})
    with pytest.raises(ValueError, match="log_variances.*'mlm'"):
        combine(LOSSES, WEIGHTS, {"mae": jnp.float32(0.0)})
