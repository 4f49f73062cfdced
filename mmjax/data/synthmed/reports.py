"""Free-text radiology reports of SynthMed patients."""

import re

import numpy as np

from mmjax.data.synthmed.patients import IMAGE_VISIBLE, Patient, pick

HEDGES = ("possible", "likely", "cannot exclude", "probable")
HEDGE_PROBABILITY = 0.1
NEGATIVE_MENTION_PROBABILITY = 0.5
MAX_FINDING_SENTENCES = 5  # keeps reports of multi-finding patients short
NUMBERED_IMPRESSION_PROBABILITY = 0.3
INDICATION_PROBABILITY = 0.6
HISTORY_PROBABILITY = 0.5
COMPLAINTS = ("dyspnea", "chest pain", "cough", "fever", "shortness of breath")
NEGATIVE_SENTENCES = {
    "cardiomegaly": (
        "Heart size is normal.",
        "Normal cardiac silhouette.",
        "The heart is not enlarged.",
        "Heart size is normal, cardiothoracic ratio {ctr}.",
        "No cardiomegaly.",
    ),
    "pleural_effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "Costophrenic angles are sharp.",
    ),
    "nodule": (
        "No pulmonary nodule.",
        "No suspicious pulmonary nodules.",
        "No focal nodule or mass.",
    ),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "consolidation": (
        "No focal consolidation.",
        "There is no consolidation.",
        "No airspace disease.",
    ),
}
NO_EFFUSION_OR_PNEUMOTHORAX = "No pleural effusion or pneumothorax."
CLEAR_LUNGS = "The lungs are clear without focal consolidation."
NORMAL_FALLBACK = "The heart and lungs are unremarkable."
NORMAL_IMPRESSIONS = ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.")


def _article(phrase: str) -> str:
    return "an" if re.match(r"[aeiou]|8|1[18]\b", phrase) else "a"


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def _severity(value: float, thresholds: tuple[float, float]) -> str:
    return "small" if value < thresholds[0] else "moderate" if value < thresholds[1] else "large"


def _zone_name(zone: str) -> str:
    return "mid" if zone == "middle" else zone


def _describe(patient: Patient, finding: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Noun phrases and whole sentences that state a present image finding."""
    if finding == "cardiomegaly":
        ctr = f"{patient.cardiothoracic_ratio:.2f}"
        nouns = ("cardiomegaly", "enlarged cardiac silhouette", f"cardiomegaly (CTR {ctr})")
        sentences = (
            "The heart is enlarged.",
            f"The cardiac silhouette is enlarged, cardiothoracic ratio {ctr}.",
            f"Cardiomegaly with a cardiothoracic ratio of {ctr}.",
        )
    elif finding == "pleural_effusion":
        side, plural = patient.effusion.side, patient.effusion.side == "bilateral"
        effusion = f"{_severity(patient.effusion.severity, (0.45, 0.75))} {side} pleural effusion"
        effusion += "s" if plural else ""
        angle = "both costophrenic angles" if plural else f"{side} costophrenic angle"
        nouns = (effusion,)
        sentences = (
            f"There {'are' if plural else 'is a'} {effusion}.",
            f"Blunting of the {angle} consistent with {effusion}.",
        )
    elif finding == "nodule":
        nodule = patient.nodule
        where = f"{nodule.side} {_zone_name(nodule.zone)} zone"
        size = f"{nodule.size_mm:.0f} mm"
        nouns = (f"{size} nodule in the {where}", f"{where} nodule measuring {size}")
        sentences = (
            f"There is {_article(size)} {size} nodule in the {where}.",
            f"{_capitalize(_article(size))} {size} rounded nodule projects over the {where}.",
        )
    elif finding == "pneumothorax":
        side = patient.pneumothorax.side
        severity = _severity(patient.pneumothorax.size, (0.22, 0.32))
        nouns = (f"{severity} {side} pneumothorax", f"{side} apical pneumothorax")
        sentences = (
            f"There is a {severity} {side} pneumothorax.",
            f"Visible pleural line at the {side} apex in keeping with pneumothorax.",
        )
    else:
        where = f"{patient.consolidation.side} {_zone_name(patient.consolidation.zone)} zone"
        nouns = (f"{where} consolidation", f"patchy consolidation in the {where}")
        sentences = (
            f"Patchy airspace opacity in the {where}, consistent with consolidation.",
            f"There is consolidation in the {where}.",
        )
    return nouns, sentences


def _indication(patient: Patient, rng) -> str | None:
    """Reason for the study, with non-image history (AF, reduced EF) now and then."""
    if rng.random() >= INDICATION_PROBABILITY:
        return None
    complaint = pick(rng, COMPLAINTS)
    if rng.random() < 0.5:
        sex = pick(rng, ("male", "man") if patient.sex == "M" else ("female", "woman"))
        parts = [f"{int(patient.age)}-year-old {sex} with {complaint}."]
    else:
        parts = [f"{_capitalize(complaint)}."]
    if patient.has("atrial_fibrillation") and rng.random() < HISTORY_PROBABILITY:
        parts.append(pick(rng, ("History of atrial fibrillation.", "Known atrial fibrillation.")))
    if patient.has("reduced_ejection_fraction") and rng.random() < HISTORY_PROBABILITY:
        ef = f"{patient.ejection_fraction:.0f}%"
        history = (f"Heart failure with reduced EF ({ef}).", f"Reduced LV ejection fraction, {ef}.")
        parts.append(pick(rng, history))
    return f"{pick(rng, ('INDICATION:', 'CLINICAL HISTORY:'))} {' '.join(parts)}"


def _negative_sentences(patient: Patient, rng) -> list[str]:
    """Explicit negatives for a random subset of the absent image findings."""
    absent = [f for f in IMAGE_VISIBLE if not patient.has(f)]
    mentioned = [f for f in absent if rng.random() < NEGATIVE_MENTION_PROBABILITY]
    sentences = []
    if {"pleural_effusion", "pneumothorax"} <= set(mentioned) and rng.random() < 0.4:
        sentences.append(NO_EFFUSION_OR_PNEUMOTHORAX)
        mentioned = [f for f in mentioned if f not in ("pleural_effusion", "pneumothorax")]
    lungs_clear = not any(patient.has(f) for f in IMAGE_VISIBLE if f != "cardiomegaly")
    if lungs_clear and "consolidation" in mentioned and rng.random() < 0.4:
        sentences.append(CLEAR_LUNGS)
        mentioned.remove("consolidation")
    ctr = f"{patient.cardiothoracic_ratio:.2f}"
    sentences += [pick(rng, NEGATIVE_SENTENCES[f]).format(ctr=ctr) for f in mentioned]
    return sentences


def write_report(patient: Patient, rng: np.random.Generator) -> str:
    """Free-text report: optional indication, FINDINGS (shuffled sentences), IMPRESSION."""
    indication = _indication(patient, rng)
    sentences, summaries = [], []
    for finding in (f for f in IMAGE_VISIBLE if patient.has(f)):
        nouns, statements = _describe(patient, finding)
        noun = pick(rng, nouns)
        if rng.random() < HEDGE_PROBABILITY:
            noun = f"{pick(rng, HEDGES)} {noun}"
            sentences.append(f"{_capitalize(noun)}.")
        elif rng.random() < 0.6:
            sentences.append(pick(rng, statements))
        else:
            sentences.append(f"{_capitalize(noun)}.")
        summaries.append(noun)
    sentences += _negative_sentences(patient, rng)[: max(MAX_FINDING_SENTENCES - len(sentences), 0)]
    order = rng.permutation(len(sentences))
    findings = " ".join(sentences[i] for i in order) or NORMAL_FALLBACK

    if not summaries:
        impression = pick(rng, NORMAL_IMPRESSIONS)
    elif len(summaries) == 1:
        impression = f"{_capitalize(summaries[0])}."
    elif rng.random() < NUMBERED_IMPRESSION_PROBABILITY:
        impression = " ".join(f"{i}. {_capitalize(s)}." for i, s in enumerate(summaries, 1))
    else:
        impression = f"{_capitalize(', '.join(summaries[:-1]))} and {summaries[-1]}."
    lines = [indication] if indication else []
    return "\n".join([*lines, f"FINDINGS: {findings}", f"IMPRESSION: {impression}"])
