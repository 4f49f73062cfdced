"""Word-overlap metrics for generated reports: corpus BLEU-4 and ROUGE-L, on a 0..1 scale.

Both come from the reference implementations (sacrebleu, Google's rouge-score) so that numbers
compare with published ones. Text is lowercased first: "No effusion" and "no effusion" say the
same thing. Overlap rewards wording, not clinical content; see `findings.finding_f1` for that.
"""

from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer


def _lowercased(references: Sequence[str], hypotheses: Sequence[str]):
    if not hypotheses:
        raise ValueError("no hypotheses to score: the list of generated reports is empty")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    return [r.lower() for r in references], [h.lower() for h in hypotheses]


def bleu4(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU-4 (n-gram counts pooled over all pairs, not averaged per report)."""
    references, hypotheses = _lowercased(references, hypotheses)
    return sacrebleu.corpus_bleu(hypotheses, [references]).score / 100.0


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean over pairs of the ROUGE-L F-measure (longest common subsequence of words)."""
    references, hypotheses = _lowercased(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = zip(references, hypotheses, strict=True)
    scores = [scorer.score(r, h)["rougeL"].fmeasure for r, h in pairs]
    return sum(scores) / len(scores)
