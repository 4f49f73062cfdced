"""Cross-modal retrieval on a held-out split: each image, video or signal against every
report and back, recall@k and median rank, beside chance (k/N).

Pair i of the split is the correct match of item i. A retrieved report whose text is
identical to the true one is a hit too (templated reports are the norm in clinical data):
the other copies of the true report are not counted against it. Only the report side is
deduplicated, by its text; identical images, videos or signals are rare, and comparing
embeddings instead would let a collapsed model (every embedding equal) score perfectly.
Non-finite scores never improve a rank (see `ranks_of_matches`).
"""

import numpy as np

from mmjax.config.rules import QUERY_MODALITIES
from mmjax.eval.registry import register

EXAMPLE_CANDIDATES = 3  # reports shown per example query in the run report


def same_content(keys) -> np.ndarray:
    """[N, N] bool: entry (i, j) is True when candidate j's content (report text, token
    ids: a hashable or array key per item) is identical to item i's. A None key (content
    unknown) is identical to nothing but itself."""
    codes, ids = [], {}
    for i, key in enumerate(keys):
        if key is None:
            codes.append(-1 - i)
        else:
            key = np.asarray(key).tobytes() if isinstance(key, (np.ndarray, list)) else key
            codes.append(ids.setdefault(key, len(ids)))
    codes = np.asarray(codes)
    return codes[:, None] == codes[None, :]


def ranks_of_matches(similarity: np.ndarray, candidate_keys=None) -> np.ndarray:
    """Rank (0 = best) of the diagonal entry within each row of `similarity`: the number
    of candidates scored at least as high as the match whose content differs from it.

    Ties with a different candidate count against the match, so a collapsed model (all
    scores equal) ranks last rather than first. `candidate_keys` (one per column, e.g.
    the report texts) marks candidates identical to the true one; they never count
    against it. Without keys only the diagonal entry is the true one.

    Non-finite scores never improve a rank: a match scored NaN or +-Inf ranks last (N - 1
    for N candidates); a wrong candidate scored NaN or -Inf never outranks a finite match;
    one scored +Inf does (it is above every finite score).
    """
    similarity = np.asarray(similarity, np.float64)
    rows, cols = similarity.shape
    matched = np.diag(similarity)[:, None]
    candidates = np.where(np.isnan(similarity), -np.inf, similarity)
    at_least_as_good = candidates >= matched
    identical = np.eye(rows, cols, dtype=bool)
    if candidate_keys is not None:
        identical |= same_content(candidate_keys)[:rows, :cols]
    ranks = (at_least_as_good & ~identical).sum(axis=1)
    return np.where(np.isfinite(matched[:, 0]), ranks, cols - 1)


def recall_at_k(similarity: np.ndarray, ks, candidate_keys=None) -> dict[str, float]:
    """Recall@k for rows as queries and columns as candidates, plus the median rank
    (1-based); `candidate_keys` as in `ranks_of_matches`."""
    ranks = ranks_of_matches(similarity, candidate_keys)
    metrics = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    metrics["median_rank"] = float(np.median(ranks) + 1)
    return metrics


def retrieval_metrics(query_emb: np.ndarray, report_emb: np.ndarray, ks,
                      modality: str = "image", reports=None) -> dict:
    """<modality>->report and report-><modality> recall@k, with chance for comparison.
    `reports` (texts or token ids, one per pair): a retrieved report identical to the
    true one is a hit."""
    similarity = query_emb @ report_emb.T
    n = len(similarity)
    return {
        "num_examples": n,
        f"{modality}_to_report": recall_at_k(similarity, ks, reports),
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
    """The first queries' top reports, for the run report (images are kept as arrays);
    a candidate is correct when its text is the query's report."""
    count = min(run.options.examples, len(rows))
    top = np.argsort(-similarity[:count], axis=1, kind="stable")[:, :EXAMPLE_CANDIDATES]
    records = ctx.records([*rows[:count], *rows[top].ravel()], run.split)
    examples = []
    for i in range(count):
        picked = [records[count + i * top.shape[1] + j] for j in range(top.shape[1])]
        truth = records[i]["report"]
        candidates = [{"report": r["report"], "score": float(similarity[i, top[i, j]]),
                       "correct": bool(top[i, j] == i or r["report"] == truth)}
                      for j, r in enumerate(picked)]
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
        reports = [r.get("report") for r in ctx.records(predictions.index[both], run.split)]
        results[f"{query}-report"] = retrieval_metrics(query_emb, report_emb,
                                                       run.options.recall_at, query, reports)
        if ctx.out_dir is not None:
            _save_examples(ctx, run, query, predictions.index[both], query_emb @ report_emb.T)
    if not results:
        raise ValueError(f"split '{run.split}' has no example with a report and an image, "
                         "video, signal or audio")
    return results
