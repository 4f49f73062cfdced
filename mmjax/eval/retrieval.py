"""Cross-modal retrieval on a held-out split: each image, video or signal against every
report and back, recall@k and median rank, beside chance (k/N).

Pair i of the split is the only correct match of item i.
"""

import numpy as np

from mmjax.config.rules import QUERY_MODALITIES
from mmjax.eval.registry import register

EXAMPLE_CANDIDATES = 3  # reports shown per example query in the run report


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


def retrieval_metrics(query_emb: np.ndarray, report_emb: np.ndarray, ks,
                      modality: str = "image") -> dict:
    """<modality>->report and report-><modality> recall@k, with chance for comparison."""
    similarity = query_emb @ report_emb.T
    n = len(similarity)
    return {
        "num_examples": n,
        f"{modality}_to_report": recall_at_k(similarity, ks),
        f"report_to_{modality}": recall_at_k(similarity.T, ks),
        "chance": {f"R@{k}": min(k / n, 1.0) for k in ks},
    }


def format_table(metrics: dict) -> str:
    """One block per modality pair, as `mmjax train` and `mmjax eval` print it."""
    lines = []
    for pair, values in metrics.items():
        ks = list(values["chance"])
        directions = [k for k in values if k.endswith("_to_report") or k.startswith("report_to")]
        lines.append(f"held-out retrieval {pair} ({values['num_examples']} pairs)")
        lines.append(f"  {'direction':<16}" + "".join(f"{k:>9}" for k in ks))
        for direction in directions:
            row = values[direction]
            lines.append(f"  {direction:<16}" + "".join(f"{row[k]:>9.3f}" for k in ks))
        lines.append(f"  {'chance':<16}" + "".join(f"{values['chance'][k]:>9.3f}" for k in ks))
    return "\n".join(lines)


def _save_examples(ctx, run, query: str, rows: np.ndarray, similarity: np.ndarray) -> None:
    """The first queries' top reports, for the run report (images are kept as arrays)."""
    count = min(run.options.examples, len(rows))
    top = np.argsort(-similarity[:count], axis=1, kind="stable")[:, :EXAMPLE_CANDIDATES]
    records = ctx.records([*rows[:count], *rows[top].ravel()], run.split)
    examples = []
    for i in range(count):
        candidates = [{"report": records[count + i * EXAMPLE_CANDIDATES + j]["report"],
                       "score": float(similarity[i, top[i, j]]), "correct": bool(top[i, j] == i)}
                      for j in range(EXAMPLE_CANDIDATES)]
        examples.append({"index": int(rows[i]), "report": records[i]["report"],
                         "candidates": candidates})
    ctx.save_json(run.file(f"_examples_{query}.json"), examples)
    if query == "image":
        ctx.save_arrays(run.file("_examples_image.npz"),
                        images=np.stack([ctx.display_image(r) for r in records[:count]]))


@register("retrieval")
def evaluate(ctx, run) -> dict:
    predictions = ctx.predictions(run.split)
    results = {}
    for query in (m for m in QUERY_MODALITIES if m in predictions.embeddings):
        both = predictions.present[query] & predictions.present["report"]
        if not both.any():
            continue
        query_emb = predictions.embeddings[query][both]
        report_emb = predictions.embeddings["report"][both]
        results[f"{query}-report"] = retrieval_metrics(query_emb, report_emb,
                                                       run.options.recall_at, query)
        if ctx.out_dir is not None:
            _save_examples(ctx, run, query, predictions.index[both], query_emb @ report_emb.T)
    if not results:
        raise ValueError(f"split '{run.split}' has no example with a report and an image, "
                         "video, signal or audio")
    return results
