"""Negation-aware finding extraction from reports, and the clinical F1 it gives.

BLEU and ROUGE score "no pneumothorax" close to "small pneumothorax". Like CheXbert-F1, which
labels reports with a learned model, `finding_f1` compares the findings stated by generated and
reference reports; the labeller here is NegEx-style rules instead. A finding is positive when
some clause mentions it and no negation cue in that clause governs the mention. Hedged mentions
("possible", "cannot exclude") count as positive: CheXpert's uncertain-to-positive policy.
Statements of normality ("heart size is normal", "costophrenic angles are sharp") mention no
finding, so they need no rule of their own.
"""

import re
from collections.abc import Sequence

import numpy as np

# Mentions of each finding, regexes over one lowercased clause.
EF = r"(?:ejection fraction|\blv ?ef\b|\bef\b)"
LEXICON = {
    "cardiomegaly": (
        r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac (?:silhouette|shadow))",
        r"(?:heart|cardiac (?:silhouette|shadow))(?: size)? (?:is|appears|remains)(?: \w+){0,2}"
        r" enlarged",
    ),
    "pleural_effusion": (
        r"(?<!pericardial )effusions?\b|hydrothorax|pleural fluid",
        r"blunt(?:ing|ed)(?: of)?(?: the)?(?: \w+){0,2} costophrenic",
        r"costophrenic (?:angle )?blunting",
    ),
    "nodule": (r"nodul(?:e|es|ar)\b|\bmass(?:es)?\b|coin lesion",),
    "pneumothorax": (r"pneumothora(?:x|ces)|\bptx\b|pleural line",),
    "consolidation": (r"consolidat|air[- ]?space (?:opacit|disease|opacification)|infiltrate",),
    "atrial_fibrillation": (r"atrial fibrillation|\ba[- ]?fib\b|\baf\b",),
    "reduced_ejection_fraction": (
        rf"(?:reduced|depressed|decreased|impaired|low) (?:lv |left ventricular )?{EF}",
        r"(?:reduced|depressed|impaired) (?:lv |left ventricular )?systolic function|\bhfref\b",
        # HFrEF is an EF of 40% or less (ESC and AHA guidelines); ranges such as "35-40%" too.
        rf"{EF}\D{{0,20}}?(?:\d+ ?(?:-|to) ?)?\b(?:[1-3]?\d(?:\.\d+)?|40) ?%",
    ),
}
# Phrases that look negated but assert or hedge a finding; they are blanked before negation.
NOT_NEGATED = (
    r"(?:can ?not|can't|could not)(?: be)? (?:exclude|excluded|rule out|ruled out)"
    r"|not (?:be )?(?:excluded|ruled out)|no (?:\w+ )?(?:change|increase) in|not only"
)
# Cues that negate mentions after them in the clause ("not" also inside one: "is not enlarged"),
# cues that negate mentions before them, and what ends a cue's scope besides a sentence.
NEGATION = (
    r"\b(?:no|not|without|neither|negative for|free of|clear|absence of|resolution of"
    r"|rule out|r/o|evaluate for|assess for|to exclude)\b"
)
POST_NEGATION = (
    r"\b(?:not (?:seen|present|identified|visualized|appreciated)|absent|resolved|excluded"
    r"|ruled out)\b"
)
CLAUSE_END = r"[.;!?\n](?=\s|$)|\b(?:but|however|although|though|except|apart from|whereas)\b"

_MENTIONS = {name: re.compile("|".join(patterns)) for name, patterns in LEXICON.items()}
_NOT_NEGATED, _CLAUSE_END = re.compile(NOT_NEGATED), re.compile(CLAUSE_END)
_NEGATION, _POST_NEGATION = re.compile(NEGATION), re.compile(POST_NEGATION)


def _check(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in LEXICON]
    if unknown:
        raise ValueError(f"unknown findings {unknown}; known: {sorted(LEXICON)}")


def _positive_in(clause: str, mention: re.Pattern) -> bool:
    pre = [cue.start() for cue in _NEGATION.finditer(clause)]
    post = [cue.start() for cue in _POST_NEGATION.finditer(clause)]
    return any(
        not any(start < m.end() for start in pre) and not any(start > m.start() for start in post)
        for m in mention.finditer(clause)
    )


def extract(report: str, names: Sequence[str]) -> np.ndarray:
    """Whether `report` states each finding (mentioned, not negated; hedged counts): bool [F]."""
    _check(names)
    text = _NOT_NEGATED.sub(" ", report.lower())
    clauses = _CLAUSE_END.split(text)
    return np.array(
        [any(_positive_in(clause, _MENTIONS[name]) for clause in clauses) for name in names], bool
    )


def extract_batch(reports: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """`extract` for each report: bool [N, F]."""
    _check(names)
    return np.array([extract(report, names) for report in reports], bool).reshape(-1, len(names))


def f1_scores(reference: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict:
    """Micro, macro and per-finding F1 of bool labels [N, F].

    A finding positive in neither has no F1 (nan); the macro mean skips it rather than count
    agreement on absence as perfect or as failure.
    """
    reference, predicted = np.asarray(reference, bool), np.asarray(predicted, bool)
    if reference.shape != predicted.shape or reference.shape[-1:] != (len(names),):
        raise ValueError(f"labels {reference.shape} and {predicted.shape} for {len(names)} names")
    true_positives = (reference & predicted).sum(0)
    claimed = reference.sum(0) + predicted.sum(0)  # 2 TP + FP + FN
    with np.errstate(invalid="ignore"):
        per_finding = 2 * true_positives / claimed
    micro = 2 * true_positives.sum() / claimed.sum() if claimed.sum() else float("nan")
    macro = float(np.nanmean(per_finding)) if claimed.any() else float("nan")
    return {
        "micro_f1": float(micro),
        "macro_f1": macro,
        "per_finding": dict(zip(names, map(float, per_finding), strict=True)),
    }


def finding_f1(
    reference_reports: Sequence[str], generated_reports: Sequence[str], names: Sequence[str]
) -> dict:
    """F1 of the findings that generated reports state against those their references state."""
    if len(reference_reports) != len(generated_reports):
        raise ValueError(
            f"{len(reference_reports)} reference but {len(generated_reports)} generated reports"
        )
    return f1_scores(
        extract_batch(reference_reports, names), extract_batch(generated_reports, names), names
    )
