"""Zero-shot classification: each finding scored by how much closer an image (video,
signal) lies to an ensemble of positive report prompts than to negative ones (the
CheXzero recipe), then ROC AUC and accuracy against the held-out labels.

Prompts come from `eval.prompts` (a JSON file {finding: {"positive": [...],
"negative": [...]}}) or are built from the label name with clinical templates.
"""

import json
from pathlib import Path

import numpy as np

from mmjax.config import ConfigError
from mmjax.eval.auc import per_label_auc
from mmjax.eval.registry import register, requires_modalities
from mmjax.eval.retrieval import QUERY_MODALITIES

POSITIVE_TEMPLATES = ("{}.", "There is {}.", "Findings consistent with {}.",
                      "IMPRESSION: {}.")
NEGATIVE_TEMPLATES = ("No {}.", "There is no {}.", "No evidence of {}.",
                      "IMPRESSION: no {}.")


def default_prompts(name: str) -> dict[str, list[str]]:
    phrase = name.replace("_", " ")
    return {"positive": [t.format(phrase) for t in POSITIVE_TEMPLATES],
            "negative": [t.format(phrase) for t in NEGATIVE_TEMPLATES]}


def load_prompts(path: str, names) -> dict[str, dict[str, list[str]]]:
    """Prompts for every label: from the JSON file where it names the label, else built in."""
    given = {}
    if path:
        try:
            given = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"eval.prompts: cannot read {path}: {e}") from e
        for name, prompts in given.items():
            if name not in names:
                raise ConfigError(f"eval.prompts: {path} names '{name}', which is not a label "
                                  f"of the dataset ({', '.join(names)})")
            if not (isinstance(prompts, dict) and prompts.get("positive")
                    and prompts.get("negative")):
                raise ConfigError(f"eval.prompts: '{name}' in {path} needs non-empty "
                                  "'positive' and 'negative' lists")
    return {name: given.get(name) or default_prompts(name) for name in names}


def _class_embedding(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of a prompt ensemble's unit embeddings."""
    mean = embeddings.mean(axis=0)
    return mean / np.linalg.norm(mean)


def prompt_directions(ctx, prompts: dict) -> np.ndarray:
    """[F, D]: positive minus negative class embedding per finding, so the score
    x · direction is the similarity margin of x for the positive class."""
    texts = [t for p in prompts.values() for t in (*p["positive"], *p["negative"])]
    embedded = iter(ctx.embed_texts(texts))
    directions = []
    for p in prompts.values():
        positive = _class_embedding(np.stack([next(embedded) for _ in p["positive"]]))
        negative = _class_embedding(np.stack([next(embedded) for _ in p["negative"]]))
        directions.append(positive - negative)
    return np.stack(directions)


@register("zeroshot", requires_modalities("zeroshot", ("report",), QUERY_MODALITIES))
def evaluate(ctx) -> dict:
    names = ctx.label_names
    if not names:
        raise ConfigError("evaluator 'zeroshot' needs a dataset with labels")
    focus = ctx.cfg.eval.zeroshot_findings or names
    unknown = set(focus) - set(names)
    if unknown:
        raise ConfigError(f"eval.zeroshot_findings: {', '.join(sorted(unknown))} are not "
                          f"labels of the dataset ({', '.join(names)})")
    directions = prompt_directions(ctx, load_prompts(ctx.cfg.eval.prompts, names))
    predictions = ctx.predictions()
    results = {}
    for query in (m for m in QUERY_MODALITIES if m in predictions.embeddings):
        rows = predictions.present[query] & predictions.has_labels
        if not rows.any():
            continue
        scores = predictions.embeddings[query][rows] @ directions.T
        labels = predictions.labels[rows] > 0.5
        aucs = per_label_auc(labels, scores, names)
        chosen = [aucs[f"auc/{n}"] for n in focus if aucs[f"auc/{n}"] is not None]
        results[query] = {
            "num_examples": int(rows.sum()),
            **aucs,
            "mean_auc": float(np.mean(chosen)) if chosen else None,
            "mean_auc_over": list(focus),
            # Positive when closer to the positive ensemble than to the negative one.
            "accuracy": float(((scores > 0) == labels).mean()),
        }
        ctx.save_arrays(f"zeroshot_{query}.npz", labels=labels, scores=scores,
                        names=np.asarray(names))
    return results
