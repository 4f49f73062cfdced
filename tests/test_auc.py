"""AUC statistics every AUC evaluator reports: counts, sensitivity and specificity at the
stated threshold, and bootstrap 95% intervals, against hand computations."""

import numpy as np
import pytest

from mmjax.eval.auc import bootstrap_aucs, per_label_auc, roc_auc

NAMES = ("a", "b", "one_class")


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random((n, 3)) < [0.3, 0.1, 0.0]
    scores = labels * [1.5, 0.5, 0.0] + rng.normal(size=(n, 3))
    return labels, scores


def test_counts_sensitivity_and_specificity_at_score_zero():
    labels = np.array([[1], [1], [1], [0], [0]], bool)
    scores = np.array([[2.0], [0.5], [-1.0], [0.0], [-3.0]])  # 0 itself calls negative
    r = per_label_auc(labels, scores, ("x",))
    assert r["positives"] == {"x": 3} and r["negatives"] == {"x": 2} and r["threshold"] == 0
    assert r["sensitivity"]["x"] == pytest.approx(2 / 3)
    assert r["specificity"]["x"] == 1.0
    assert r["auc/x"] == pytest.approx(5 / 6)  # -1 below the negative at 0: 5 of 6 pairs
    assert "auc_ci95" not in r  # bootstrap off


def test_bootstrap_resamples_match_a_loop_over_the_same_draws():
    labels, scores = _data(60)
    got = bootstrap_aucs(labels, scores, 70, seed=3)  # crosses a chunk boundary (64)
    rng = np.random.default_rng(3)
    draws = np.concatenate([rng.integers(0, 60, (64, 60)), rng.integers(0, 60, (6, 60))])
    for k in (0, 63, 64, 69):
        for j in range(2):
            assert got[k, j] == pytest.approx(roc_auc(labels[draws[k], j], scores[draws[k], j]))
    assert np.isnan(got[:, 2]).all()  # no positives in any resample


def test_intervals_cover_the_auc_shrink_with_data_and_are_reproducible():
    labels, scores = _data(300)
    names = NAMES
    r = per_label_auc(labels, scores, names, ("a", "b"), bootstrap=500)
    for name in ("a", "b"):
        low, high = r["auc_ci95"][name]
        assert low < r[f"auc/{name}"] < high
    assert r["auc_ci95"]["one_class"] is None and r["auc/one_class"] is None
    low, high = r["mean_auc_ci95"]
    assert low < r["mean_auc"] < high
    assert r == per_label_auc(labels, scores, names, ("a", "b"), bootstrap=500)  # fixed seed
    big = per_label_auc(*_data(3000), names, ("a", "b"), bootstrap=500)
    width = np.subtract(*reversed(r["auc_ci95"]["a"]))
    assert np.subtract(*reversed(big["auc_ci95"]["a"])) < 0.5 * width  # ~1/sqrt(10)


def test_nan_scores_count_as_wrong_calls():
    labels = np.array([[1], [0], [1], [0]], bool)
    r = per_label_auc(labels, np.array([[np.nan], [np.nan], [1.0], [-1.0]]), ("x",),
                      bootstrap=50)
    assert r["sensitivity"]["x"] == 0.5 and r["specificity"]["x"] == 1.0
    assert r["auc/x"] == 0.25  # a NaN is the worst for its example: 1 of 4 pairs won
