"""Cross-modal retrieval: recall@k in both directions on a held-out split.

Pair i of the split is the only correct match of item i. Chance recall@k is k/N.
"""

import numpy as np


def ranks_of_matches(similarity: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of the diagonal entry within each row of `similarity`.

    Ties count against the match, so a collapsed model (all scores equal) ranks
    last rather than first.
    """
    matched = np.diag(similarity)[:, None]
    at_least_as_good = similarity >= matched
    return at_least_as_good.sum(axis=1) - 1


def recall_at_k(similarity: np.ndarray, ks) -> dict[str, float]:
    """Recall@k for rows as queries and columns as candidates, plus the median rank (1-based)."""
    ranks = ranks_of_matches(similarity)
    metrics = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    metrics["median_rank"] = float(np.median(ranks) + 1)
    return metrics


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, ks) -> dict:
    """image->text and text->image recall@k, with chance levels for comparison."""
    similarity = image_emb @ text_emb.T
    n = len(similarity)
    return {
        "num_examples": n,
        "image_to_text": recall_at_k(similarity, ks),
        "text_to_image": recall_at_k(similarity.T, ks),
        "chance": {f"R@{k}": min(k / n, 1.0) for k in ks},
    }


def format_table(metrics: dict) -> str:
    ks = [key for key in metrics["chance"]]
    lines = [f"held-out retrieval ({metrics['num_examples']} pairs)"]
    lines.append(f"  {'direction':<14}" + "".join(f"{k:>9}" for k in ks))
    for direction in ("image_to_text", "text_to_image"):
        row = metrics[direction]
        lines.append(f"  {direction:<14}" + "".join(f"{row[k]:>9.3f}" for k in ks))
    lines.append(f"  {'chance':<14}" + "".join(f"{metrics['chance'][k]:>9.3f}" for k in ks))
    return "\n".join(lines)

