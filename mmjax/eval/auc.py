"""ROC AUC and curves from scores and binary labels, with ties handled exactly."""

import numpy as np
from scipy.stats import rankdata

from mmjax.config import ConfigError


def worst_where_nonfinite(labels, scores) -> np.ndarray:
    """Scores as float64 with each non-finite one made the worst it can be for its
    example: below every finite score for a positive, above it for a negative, so a NaN
    or infinite score never helps (an all-NaN model has AUC 0, not NaN or 1)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    return np.where(np.isfinite(scores), scores, np.where(labels, -np.inf, np.inf))


def roc_auc(labels, scores) -> float:
    """P(score of a random positive > score of a random negative), ties counting half
    (the Mann-Whitney U statistic). NaN when either class is absent. Non-finite scores
    count as the worst (`worst_where_nonfinite`)."""
    labels = np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(worst_where_nonfinite(labels, scores))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


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


def per_label_auc(labels: np.ndarray, scores: np.ndarray, names, focus=()) -> dict:
    """{'auc/<name>': AUC} for each column, and 'mean_auc' over the `focus` columns
    (default all) where both classes occur; a one-class column's AUC is null."""
    aucs = {name: roc_auc(labels[:, i], scores[:, i]) for i, name in enumerate(names)}
    defined = [aucs[n] for n in (focus or names) if not np.isnan(aucs[n])]
    return {"mean_auc": float(np.mean(defined)) if defined else None,
            "mean_auc_over": list(focus or names),
            **{f"auc/{name}": (None if np.isnan(v) else v) for name, v in aucs.items()}}


def focus_findings(cfg_findings, names, key: str = "findings") -> tuple[str, ...]:
    """An evaluator's findings (config key `key`), checked against the dataset's labels."""
    unknown = set(cfg_findings) - set(names)
    if unknown:
        raise ConfigError(f"{key}: {', '.join(sorted(unknown))} are not labels of the "
                         f"dataset ({', '.join(names)})")
    return tuple(cfg_findings)
