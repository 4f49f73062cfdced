"""Report-generation metrics: BLEU-4 and ROUGE-L against hand-computed values, and the finding
extractor against hand-written clinical sentences and SynthMed's ground truth."""

import numpy as np
import pytest

from mmjax.data import synthmed
from mmjax.eval import findings, text_metrics

REFERENCE = "The cat sat on the mat"
SIMILAR = "the cat sat on a mat"
NAMES = synthmed.FINDINGS


@pytest.mark.parametrize("metric", [text_metrics.bleu4, text_metrics.rouge_l])
def test_identical_texts_score_one_and_perturbed_less(metric):
    reports = ["No pleural effusion or pneumothorax.", "Small left pleural effusion is seen."]
    assert metric(reports, [r.upper() for r in reports]) == pytest.approx(1.0)  # lowercased
    perturbed = ["No pneumothorax or pleural effusion.", "Pleural effusion seen, small, left."]
    assert metric(reports, perturbed) < 0.8
    assert metric(reports, ["heart size normal", "lungs clear"]) == pytest.approx(0.0)


def test_bleu4_known_value():
    """Clipped n-gram matches pooled over the corpus; no brevity penalty (hypotheses as long).

    "the cat sat on a mat" against "the cat sat on the mat": 1-grams 5/6, 2-grams 3/5
    (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3. The identical 3-word pair adds 3/3,
    2/2, 1/1 and 0/0. Corpus BLEU = (8/9 * 5/7 * 3/5 * 1/3) ** (1/4) = 0.59695.
    """
    value = text_metrics.bleu4([REFERENCE, "no pleural effusion"], [SIMILAR, "No pleural effusion"])
    assert value == pytest.approx((8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25, abs=1e-6)


def test_rouge_l_known_value():
    """LCS of "the cat on the mat" (5 words) and the 6-word reference: 5, so P = 1, R = 5/6 and
    F = 2PR / (P + R) = 10/11; with SIMILAR (LCS "the cat sat on mat") F = 5/6. Mean 0.87121."""
    value = text_metrics.rouge_l([REFERENCE, REFERENCE], ["the cat on the mat", SIMILAR])
    assert value == pytest.approx((10 / 11 + 5 / 6) / 2, abs=1e-6)


@pytest.mark.parametrize("metric", [text_metrics.bleu4, text_metrics.rouge_l])
def test_metrics_reject_empty_and_mismatched_inputs(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        metric(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "sentence, positive",
    [
        ("Cardiomegaly without pleural effusion.", {"cardiomegaly"}),
        ("Enlarged cardiac silhouette.", {"cardiomegaly"}),
        ("The heart is mildly enlarged.", {"cardiomegaly"}),
        ("The heart is not enlarged. Normal heart size.", set()),
        ("No pleural effusion or pneumothorax.", set()),
        ("No evidence of focal consolidation or pleural effusion.", set()),
        ("The lungs are clear without focal consolidation.", set()),
        ("Lungs are clear of consolidation.", set()),
        ("Possible small left pleural effusion.", {"pleural_effusion"}),
        ("Probable right lower lobe consolidation.", {"consolidation"}),
        ("Cannot exclude a small apical pneumothorax.", {"pneumothorax"}),
        ("A small pneumothorax cannot be excluded.", {"pneumothorax"}),
        ("Blunting of the right costophrenic angle.", {"pleural_effusion"}),
        ("Small pericardial effusion.", set()),
        ("Visible pleural line at the left apex.", {"pneumothorax"}),
        ("The pneumothorax has resolved. Pneumothorax is not seen.", set()),
        ("No pneumothorax, but patchy airspace opacity at the left base.", {"consolidation"}),
        ("No change in the 12 mm right upper lobe nodule.", {"nodule"}),
        ("No suspicious pulmonary nodule or mass.", set()),
        ("Known AF. Reduced EF.", {"atrial_fibrillation", "reduced_ejection_fraction"}),
        ("No history of atrial fibrillation.", set()),
        ("LVEF 32.5%.", {"reduced_ejection_fraction"}),
        ("Ejection fraction of 35-40% on echo.", {"reduced_ejection_fraction"}),
        ("Preserved ejection fraction, EF 62.5%. LVEF 40.5%.", set()),
        ("INDICATION: Evaluate for pneumothorax.\nFINDINGS: Heart size is normal.", set()),
    ],
)
def test_extract(sentence, positive):
    extracted = findings.extract(sentence, NAMES)
    assert {name for name, found in zip(NAMES, extracted, strict=True) if found} == positive


def test_extract_rejects_unknown_findings():
    with pytest.raises(ValueError, match="known: .*cardiomegaly"):
        findings.extract("Cardiomegaly.", ["cardiomegaly", "edema"])


def _synthmed_reports(count: int, seed: int = 0):
    patients = [synthmed.sample_patient(seed, i) for i in range(count)]
    rngs = [np.random.default_rng([seed, i, synthmed.REPORT_STREAM]) for i in range(count)]
    reports = [synthmed.write_report(p, rng) for p, rng in zip(patients, rngs, strict=True)]
    return reports, np.array([p.findings for p in patients], bool)


def test_extractor_recovers_synthmed_labels():
    """Image findings are always reported, so recall and precision must both be high; AF and
    reduced EF appear only in an optional history line, so only precision is checked."""
    reports, labels = _synthmed_reports(400)
    extracted = findings.extract_batch(reports, NAMES)
    scores = findings.f1_scores(labels, extracted, NAMES)["per_finding"]
    for name in synthmed.IMAGE_VISIBLE:
        assert scores[name] >= 0.95, name
    for name in ("atrial_fibrillation", "reduced_ejection_fraction"):
        column = NAMES.index(name)
        assert extracted[:, column].any() and not (extracted & ~labels)[:, column].any(), name


def test_finding_f1_is_one_for_references_and_low_for_shuffled_reports():
    reports, _ = _synthmed_reports(300)
    perfect = findings.finding_f1(reports, reports, NAMES)
    assert perfect["micro_f1"] == perfect["macro_f1"] == 1.0
    assert set(perfect["per_finding"].values()) == {1.0}
    shuffled = [reports[i] for i in np.random.default_rng(0).permutation(len(reports))]
    assert findings.finding_f1(reports, shuffled, NAMES)["micro_f1"] < 0.5
