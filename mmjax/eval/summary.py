"""The headline numbers of a set of eval results, as the CLI prints them."""

from mmjax.eval.retrieval import format_table


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _mean_auc(metrics: dict) -> str:
    """The mean AUC, with its bootstrap 95% interval when there is one."""
    interval = metrics.get("mean_auc_ci95")
    text = _number(metrics["mean_auc"])
    return text + (f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def _lines(kind: str, metrics: dict) -> list[str]:
    if kind == "retrieval":
        return format_table(metrics).splitlines()
    if kind == "zeroshot":
        return [f"zero-shot {m}: mean AUC {_mean_auc(v)} over "
                f"{', '.join(v['mean_auc_over'])}; accuracy {_number(v['accuracy'])}"
                for m, v in metrics.items()]
    if kind == "probe":
        return [f"linear probe {m}: " + ", ".join(
            f"{float(f):.0%} labels ({v['num_labelled']}) AUC {_number(v['mean_auc'])}"
            for f, v in fractions.items()) for m, fractions in metrics.items()]
    if kind == "diagnosis":
        line = (f"diagnosis: mean AUC {_mean_auc(metrics)} over "
                f"{', '.join(metrics['mean_auc_over'])}")
        if "risk_auc" in metrics:
            line += f"; risk AUC {_number(metrics['risk_auc'])}"
        return [line]
    if kind == "generation":
        return [f"report generation ({method}, {metrics['num_examples']} reports): BLEU-4 "
                f"{_number(v['bleu4'])}, ROUGE-L {_number(v['rouge_l'])}, finding F1 "
                f"{_number(v.get('micro_f1'))}" for method, v in metrics.items()
                if isinstance(v, dict)]
    if kind == "reconstruction":
        return [f"MAE {m}: hidden-patch error {_number(v['error'])} (normalised pixels)"
                for m, v in metrics.items()]
    return [f"{kind}: {metrics}"]


def _named_lines(name: str, metrics: dict) -> list[str]:
    """A `kind@split` run's lines are its kind's, each prefixed with its name."""
    kind, _, split = name.partition("@")
    lines = _lines(kind, metrics)
    return [f"[{name}] {line}" for line in lines] if split else lines


def format_results(results: dict[str, dict]) -> str:
    return "\n".join(line for name, metrics in results.items()
                     for line in _named_lines(name, metrics))
