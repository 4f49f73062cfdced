"""The fine-tuned heads on held-out patients: diagnosis ROC AUC per finding and macro,
risk ROC AUC (the risk outcome is binary, so AUC is its concordance index)."""

import numpy as np

from mmjax.config import ConfigError
from mmjax.eval.auc import focus_findings, per_label_auc, roc_auc
from mmjax.eval.registry import register


@register("diagnosis")
def evaluate(ctx, run) -> dict:
    predictions = ctx.predictions(run.split)
    if predictions.diagnosis is None:
        raise ConfigError(f"evaluator '{run.name}': the model has no diagnosis head "
                          "parameters")
    # Patients with none of the model's inputs (an audio model, a patient never auscultated)
    # have nothing to be diagnosed from: they are counted, not scored.
    seen = np.stack(list(predictions.present.values())).any(0)
    rows = predictions.has_labels & seen
    labels = predictions.labels[rows] > 0.5
    scores = predictions.diagnosis[rows]
    focus = focus_findings(run.options.findings, ctx.label_names,
                           f"eval.{run.kind}.findings")
    results = {"num_examples": int(rows.sum()),
               "num_without_inputs": int((predictions.has_labels & ~seen).sum()),
               **per_label_auc(labels, scores, ctx.label_names, focus,
                              ctx.cfg.eval.bootstrap_samples)}
    results["accuracy"] = float(((scores > 0) == labels).mean())
    ctx.save_arrays(run.file(".npz"), labels=labels, scores=scores,
                    names=np.asarray(ctx.label_names))
    if ctx.cfg.objectives.risk and (predictions.has_risk & seen).any():
        has_risk = predictions.has_risk & seen
        auc = roc_auc(predictions.risk[has_risk] > 0.5, predictions.risk_logit[has_risk])
        results["risk_auc"] = None if np.isnan(auc) else auc
    return results
