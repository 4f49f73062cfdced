"""Linear probe: L2-regularised logistic regression per finding on frozen embeddings of
the training split, with 1%, 10% and 100% of its labels, scored by held-out ROC AUC.

It measures what pretraining put into the embedding: a probe needs no fine-tuning and
few labels when the findings are linearly readable.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.config import ConfigError
from mmjax.config.rules import QUERY_MODALITIES
from mmjax.eval.auc import focus_findings, per_label_auc
from mmjax.eval.registry import register

ITERATIONS = 100
SEED = 0


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float):
    """(weights [D, F], bias [F]) minimising mean binary cross-entropy + l2·|W|² with
    L-BFGS, on features standardised by their own mean and spread (returned folded in)."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    x, y = jnp.asarray((features - mean) / std), jnp.asarray(labels, jnp.float32)

    def loss(params):
        w, b = params
        logits = x @ w + b
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(w * w)

    @jax.jit
    def solve(params):
        solver = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                           value_fn=loss)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, ITERATIONS)
        return params

    w, b = solve((jnp.zeros((x.shape[1], y.shape[1])), jnp.zeros(y.shape[1])))
    w = np.asarray(w) / std[:, None]
    return w, np.asarray(b) - mean @ w


def label_subset(num_examples: int, fraction: float, seed: int = SEED) -> np.ndarray:
    """The first `fraction` of one fixed permutation, so smaller subsets nest in larger."""
    count = max(int(round(fraction * num_examples)), 2)
    return np.random.default_rng(seed).permutation(num_examples)[:count]


@register("probe")
def evaluate(ctx, run) -> dict:
    """Fitted on data.train_split, scored on the run's split."""
    if not ctx.label_names:
        raise ConfigError(f"evaluator '{run.name}' needs a dataset with labels")
    options = run.options
    train = ctx.predictions(ctx.cfg.data.train_split, options.train_examples)
    held_out = ctx.predictions(run.split)
    focus = focus_findings(options.findings, ctx.label_names, f"eval.{run.kind}.findings")
    results = {}
    for query in (m for m in QUERY_MODALITIES if m in train.embeddings):
        train_rows = train.present[query] & train.has_labels
        test_rows = held_out.present[query] & held_out.has_labels
        if not train_rows.any() or not test_rows.any():
            continue
        features, labels = train.embeddings[query][train_rows], train.labels[train_rows]
        test_labels = held_out.labels[test_rows] > 0.5
        per_fraction = {}
        for fraction in options.fractions:
            chosen = label_subset(len(features), fraction)
            w, b = fit_logistic(features[chosen], labels[chosen], options.l2)
            scores = held_out.embeddings[query][test_rows] @ w + b
            per_fraction[f"{fraction:g}"] = {"num_labelled": len(chosen),
                                             **per_label_auc(test_labels, scores,
                                                             ctx.label_names, focus,
                                                             ctx.cfg.eval.bootstrap_samples)}
        results[query] = per_fraction
    return results
