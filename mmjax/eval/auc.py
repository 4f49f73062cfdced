"""ROC AUC and curves from scores and binary labels, with ties handled exactly."""

import warnings

import numpy as np
from scipy.stats import rankdata

from mmjax.config import ConfigError


def worst_where_nonfinite(labels, scores) -> np.ndarray:
    """Scores as float64 with each non-finite one made the worst it can be for its
    example: below every finite score for a positive, above it for a negative, so a NaN
    or infinite score never helps (an all-NaN model has AUC 0, not NaN or 1)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    return np.where(np.isfinite(scores), scores, np.where(labels, -np.inf, np.inf))


def _mann_whitney(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC along the last axis of bool labels and float64 scores (non-finite already made
    the worst): the positives' rank sum, less its minimum, over the pairs; NaN where a row
    lacks a class."""
    positives = labels.sum(-1)
    pairs = positives * (labels.shape[-1] - positives)
    ranks = rankdata(scores, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(-1) - positives * (positives + 1) / 2) / pairs
    return np.where(pairs > 0, auc, np.nan)


def roc_auc(labels, scores) -> float:
    """P(score of a random positive > score of a random negative), ties counting half
    (the Mann-Whitney U statistic). NaN when either class is absent. Non-finite scores
    count as the worst (`worst_where_nonfinite`)."""
    labels = np.asarray(labels, bool)
    return float(_mann_whitney(labels, worst_where_nonfinite(labels, scores)))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct threshold, from (0, 0)."""
    labels = np.asarray(labels, bool)
    scores = worst_where_nonfinite(labels, scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_positives = np.cumsum(sorted_labels)[last_of_tie]
    false_positives = np.cumsum(~sorted_labels)[last_of_tie]
    return (np.r_[0.0, false_positives / max(false_positives[-1], 1)],
            np.r_[0.0, true_positives / max(true_positives[-1], 1)])


BOOTSTRAP_SEED = 0
BOOTSTRAP_CHUNK = 64  # resamples ranked at once: memory is chunk x examples float64


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, samples: int,
                   seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """AUC [samples, F] of each column on `samples` resamples of the examples (drawn with
    replacement, the same draws for every column); NaN where a resample lacks a class."""
    labels = np.asarray(labels, bool)
    scores = worst_where_nonfinite(labels, scores)
    rng, count = np.random.default_rng(seed), len(labels)
    out = np.empty((samples, labels.shape[1]))
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        rows = rng.integers(0, count, (min(BOOTSTRAP_CHUNK, samples - start), count))
        for j in range(labels.shape[1]):
            out[start:start + len(rows), j] = _mann_whitney(labels[rows, j], scores[rows, j])
    return out


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else None


def per_label_auc(labels: np.ndarray, scores: np.ndarray, names, focus=(),
                  bootstrap: int = 0) -> dict:
    """{'auc/<name>': AUC} for each column, and 'mean_auc' over the `focus` columns
    (default all) where both classes occur; a one-class column's AUC is null. Per column
    also the positives and negatives, and sensitivity and specificity at score > 0 (a
    logit's p = 0.5, zero-shot's positive margin). With `bootstrap` resamples (fixed
    seed), 95% percentile intervals of each AUC and of the mean."""
    labels = np.asarray(labels, bool)
    aucs = {name: roc_auc(labels[:, i], scores[:, i]) for i, name in enumerate(names)}
    focus = tuple(focus or names)
    defined = [aucs[n] for n in focus if not np.isnan(aucs[n])]
    called = np.asarray(scores) > 0  # NaN scores call nothing positive
    positives, negatives = labels.sum(0), (~labels).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (called & labels).sum(0) / positives
        specificity = (~called & ~labels).sum(0) / negatives
    results = {
        "mean_auc": float(np.mean(defined)) if defined else None,
        "mean_auc_over": list(focus),
        **{f"auc/{name}": (None if np.isnan(v) else v) for name, v in aucs.items()},
        "positives": dict(zip(names, map(int, positives), strict=True)),
        "negatives": dict(zip(names, map(int, negatives), strict=True)),
        "threshold": 0.0,
        "sensitivity": {n: (None if np.isnan(v) else float(v))
                        for n, v in zip(names, sensitivity, strict=True)},
        "specificity": {n: (None if np.isnan(v) else float(v))
                        for n, v in zip(names, specificity, strict=True)},
    }
    if bootstrap:
        resampled = bootstrap_aucs(labels, scores, bootstrap)
        results["auc_ci95"] = {n: _interval(resampled[:, i]) for i, n in enumerate(names)}
        columns = [list(names).index(n) for n in focus if not np.isnan(aucs[n])]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no column
            means = np.nanmean(resampled[:, columns], axis=1) if columns else np.array([])
        results["mean_auc_ci95"] = _interval(means)
        results["bootstrap_samples"] = bootstrap
    return results


def focus_findings(cfg_findings, names, key: str = "findings") -> tuple[str, ...]:
    """An evaluator's findings (config key `key`), checked against the dataset's labels."""
    unknown = set(cfg_findings) - set(names)
    if unknown:
        raise ConfigError(f"{key}: {', '.join(sorted(unknown))} are not labels of the "
                         f"dataset ({', '.join(names)})")
    return tuple(cfg_findings)
