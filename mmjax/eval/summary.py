"""The headline numbers of a set of eval results, as the CLI prints them."""

from mmjax.eval.retrieval import format_table


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _lines(name: str, metrics: dict) -> list[str]:
    if name == "retrieval":
        return format_table(metrics).splitlines()
    if name == "zeroshot":
        return [f"zero-shot {m}: mean AUC {_number(v['mean_auc'])} over "
                f"{', '.join(v['mean_auc_over'])}; accuracy {_number(v['accuracy'])}"
                for m, v in metrics.items()]
    if name == "probe":
        return [f"linear probe {m}: " + ", ".join(
            f"{float(f):.0%} labels ({v['num_labelled']}) AUC {_number(v['mean_auc'])}"
            for f, v in fractions.items()) for m, fractions in metrics.items()]
    if name == "diagnosis":
        line = (f"diagnosis: mean AUC {_number(metrics['mean_auc'])} over "
                f"{', '.join(metrics['mean_auc_over'])}")
        if "risk_auc" in metrics:
            line += f"; risk AUC {_number(metrics['risk_auc'])}"
        return [line]
    if name == "generation":
        return [f"report generation ({method}, {metrics['num_examples']} reports): BLEU-4 "
                f"{_number(v['bleu4'])}, ROUGE-L {_number(v['rouge_l'])}, finding F1 "
                f"{_number(v.get('micro_f1'))}" for method, v in metrics.items()
                if isinstance(v, dict)]
    if name == "reconstruction":
        return [f"MAE {m}: hidden-patch error {_number(v['error'])} (normalised pixels)"
                for m, v in metrics.items()]
    return [f"{name}: {metrics}"]


def format_results(results: dict[str, dict]) -> str:
    return "\n".join(line for name, metrics in results.items() for line in _lines(name, metrics))
