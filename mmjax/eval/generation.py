"""Report generation on held-out studies: greedy and beam-search decoding with a KV cache
under jit, scored against the reference reports with BLEU-4, ROUGE-L and a clinical
finding F1 (findings extracted with negation, the CheXbert-F1 idea)."""

import functools

import numpy as np

from mmjax.config import ConfigError
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.eval import decoding, findings, text_metrics
from mmjax.eval.auc import focus_findings
from mmjax.eval.registry import register


def _text(tokenizer, ids: np.ndarray, stop: int) -> str:
    """Tokens up to the first `stop` id, decoded without special tokens."""
    ids = ids.tolist()
    return tokenizer.decode(ids[: ids.index(stop)] if stop in ids else ids)


def _scores(references: list[str], generated: list[str], names) -> dict:
    f1 = findings.finding_f1(references, generated, names) if names else {}
    return {"bleu4": text_metrics.bleu4(references, generated),
            "rouge_l": text_metrics.rouge_l(references, generated), **f1}


@register("generation")
def evaluate(ctx, run) -> dict:
    model, options = ctx.model, run.options
    roles = tokenizer_lib.specials(ctx.tokenizer)
    # GPT-style tokenizers without a start token begin a text with their end token.
    if roles.end is None:
        raise ConfigError("report generation needs a tokenizer whose texts end with an end "
                          "token ([SEP], </s>, <|endoftext|>)")
    bos = roles.end if roles.start is None else roles.start
    ids = {"bos_id": bos, "eos_id": roles.end, "pad_id": roles.pad}
    max_len = options.max_len or ctx.cfg.data.max_text_len
    names = (focus_findings(options.findings, ctx.label_names, f"eval.{run.kind}.findings")
             or tuple(n for n in ctx.label_names if n in findings.LEXICON))
    unknown = sorted(set(names) - set(findings.LEXICON))
    if unknown:
        raise ConfigError(f"eval.{run.kind}.findings: the report finding extractor knows no "
                          f"{', '.join(unknown)} (known: {', '.join(sorted(findings.LEXICON))})")

    def generate(variables, batch):
        greedy, greedy_ll = decoding.greedy(model, variables, batch, max_len=max_len, **ids)
        beam, beam_ll = decoding.beam_search(model, variables, batch, max_len=max_len,
                                             beam_size=options.beam_size,
                                             length_penalty=options.length_penalty, **ids)
        return {"greedy": greedy, "greedy_ll": greedy_ll, "beam": beam, "beam_ll": beam_ll}

    out = ctx.run(ctx.jit(generate, "generation"), run.split, options.limit,
                  keep=("has_report",))
    rows = out["has_report"]
    if not rows.any():
        raise ConfigError(f"evaluator '{run.name}': no example of split '{run.split}' has "
                          "a report")
    decode = functools.partial(_text, ctx.tokenizer, stop=ids["eos_id"])
    # Scored against the reports as written, not their tokenized (lower-cased, truncated)
    # round trip, which would hide what truncation and normalisation lose.
    references = [r["report"] for r in ctx.records(out["index"][rows], run.split)]
    results = {"num_examples": int(rows.sum())}
    texts = {}
    for method in ("greedy", "beam"):
        texts[method] = [decode(t[1:]) for t in out[method][rows]]
        results[method] = {**_scores(references, texts[method], names),
                           "log_likelihood": float(out[f"{method}_ll"][rows].mean())}
    count = min(options.examples, len(references))
    ctx.save_json(run.file("_examples.json"), [
        {"index": int(i), "reference": references[k], "greedy": texts["greedy"][k],
         "beam": texts["beam"][k]}
        for k, i in enumerate(out["index"][rows][:count])])
    return results
