"""SynthMed's patients: the latent model of correlated findings, and sampling one patient."""

import dataclasses

import numpy as np

FINDINGS = (
    "cardiomegaly",
    "pleural_effusion",
    "nodule",
    "pneumothorax",
    "consolidation",
    "atrial_fibrillation",
    "reduced_ejection_fraction",
)
IMAGE_VISIBLE = ("cardiomegaly", "pleural_effusion", "nodule", "pneumothorax", "consolidation")
SIDES = ("right", "left")  # patient sides; the patient's right is on the image left
EFFUSION_SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower")

# One independent random stream per part of a patient. Streams are only ever added, never
# reordered, so earlier parts stay bit-identical; latents added after the first release (heart
# rate, which modalities the record holds) have a stream of their own.
LATENT_STREAM, IMAGE_STREAM, REPORT_STREAM = 0, 1, 2
ECHO_STREAM, ECG_STREAM, LATER_LATENT_STREAM = 3, 4, 5
AUDIO_STREAM, AUDIO_LATENT_STREAM = 6, 7

# Latent model: each finding, then the risk outcome, is Bernoulli with a logit that is a weighted
# sum of features: a constant, age in decades from 60, male sex and the findings sampled before it.
AGE_RANGE = (20.0, 90.0)
FINDING_LOGITS = {
    "reduced_ejection_fraction": {"constant": -2.1, "decades": 0.45, "male": 0.6},
    "cardiomegaly": {"constant": -2.0, "decades": 0.1, "reduced_ejection_fraction": 2.85},
    "atrial_fibrillation": {
        "constant": -3.2,
        "decades": 0.55,
        "male": 0.2,
        "cardiomegaly": 1.3,
        "reduced_ejection_fraction": 0.6,
    },
    "pleural_effusion": {
        "constant": -3.1,
        "decades": 0.15,
        "reduced_ejection_fraction": 1.4,
        "cardiomegaly": 1.1,
    },
    "nodule": {"constant": -1.8, "decades": 0.3},
    "pneumothorax": {"constant": -2.75, "decades": -0.1, "male": 0.3},
    "consolidation": {"constant": -1.75, "decades": 0.1},
}
RISK_LOGIT = {
    "constant": -1.9,
    "decades": 0.4,
    "male": 0.2,
    "reduced_ejection_fraction": 1.3,
    "atrial_fibrillation": 0.8,
    "consolidation": 1.2,
    "pleural_effusion": 0.5,
}
NORMAL_CTR, ENLARGED_CTR = (0.42, 0.50), (0.55, 0.70)
NORMAL_EF, REDUCED_EF = (60.0, 5.0), (20.0, 40.0)  # normal: mean, std; reduced: range
NODULE_SIZE_MM = (6.0, 30.0)
# Resting ventricular rate (bpm): normal with a mean from the same features, clipped per rhythm.
HEART_RATE = {"constant": 72.0, "decades": -1.5, "reduced_ejection_fraction": 6.0}
AF_HEART_RATE = {"constant": 92.0, "decades": -1.5, "reduced_ejection_fraction": 6.0}
HEART_RATE_STD, SINUS_RATE_RANGE, AF_RATE_RANGE = 8.0, (55.0, 95.0), (60.0, 140.0)
# Which modalities a record holds: Bernoulli logits as above. Echo is ordered for suspected
# heart failure, an ECG for AF; a record holding none would not exist, so it keeps its image.
PRESENCE_LOGITS = {
    "has_image": {"constant": 2.95},
    "has_echo": {"constant": 0.1, "reduced_ejection_fraction": 1.6, "cardiomegaly": 0.9},
    "has_ecg": {"constant": 1.3, "atrial_fibrillation": 1.6},
    "has_report": {"constant": 3.5},
}
# Heart sounds (their own stream, so every earlier latent is unchanged): auscultation is
# recorded more often when the heart is suspect; calcific aortic stenosis comes with age;
# a dilated left ventricle leaks (functional mitral regurgitation) and fills with an S3.
AUDIO_LOGITS = {
    "has_audio": {"constant": 0.4, "reduced_ejection_fraction": 1.0, "atrial_fibrillation": 0.8},
    "aortic_stenosis": {"constant": -3.4, "decades": 0.7, "male": 0.3},
    "mitral_regurgitation": {"constant": -3.5, "reduced_ejection_fraction": 4.3},
    "third_sound": {"constant": -4.0, "reduced_ejection_fraction": 4.4},
}


@dataclasses.dataclass(frozen=True)
class Effusion:
    side: str  # "right", "left" or "bilateral"
    severity: float  # 0..1; sets the fluid height


@dataclasses.dataclass(frozen=True)
class Nodule:
    side: str
    zone: str
    size_mm: float
    position: tuple[float, float]  # (medial-to-lateral, top-to-bottom) fractions within the zone


@dataclasses.dataclass(frozen=True)
class Pneumothorax:
    side: str
    size: float  # fraction by which the lung has collapsed


@dataclasses.dataclass(frozen=True)
class Consolidation:
    side: str
    zone: str


@dataclasses.dataclass(frozen=True)
class Patient:
    """Latent ground truth of one patient; every modality is rendered from it."""

    patient_id: int
    age: float
    sex: str  # "F" or "M"
    body_size: float  # relative linear size, ~1
    findings: tuple[bool, ...]  # aligned with FINDINGS
    cardiothoracic_ratio: float
    ejection_fraction: float  # percent
    effusion: Effusion | None
    nodule: Nodule | None
    pneumothorax: Pneumothorax | None
    consolidation: Consolidation | None
    risk: bool
    heart_rate: float  # resting ventricular rate, beats per minute
    # Which modalities the record holds; at least one of the first four is.
    has_image: bool
    has_echo: bool
    has_ecg: bool
    has_report: bool
    has_audio: bool
    murmur: str  # one of heart_sounds.MURMURS; aortic stenosis wins over regurgitation
    third_sound: bool  # an S3 gallop

    def has(self, finding: str) -> bool:
        return self.findings[FINDINGS.index(finding)]


def patient_stream(seed: int, index: int, part: int) -> np.random.Generator:
    """The random stream of one part (a *_STREAM) of patient `index` of corpus `seed`."""
    return np.random.default_rng([seed, index, part])


def pick(rng: np.random.Generator, options, p=None):
    """One of `options`, with probabilities `p` (default: uniform)."""
    return options[rng.choice(len(options), p=p)]


def _weighted(weights: dict[str, float], features: dict[str, float]) -> float:
    return sum(weight * features[name] for name, weight in weights.items())


def _bernoulli_logit(rng, weights: dict[str, float], features: dict[str, float]) -> bool:
    return bool(rng.random() < 1.0 / (1.0 + np.exp(-_weighted(weights, features))))


def _later_latents(rng, features: dict[str, float]) -> dict:
    """Heart rate and modality presence, from their own stream so that stream 0 is unchanged."""
    af = features["atrial_fibrillation"] > 0
    mean = _weighted(AF_HEART_RATE if af else HEART_RATE, features)
    rate = np.clip(rng.normal(mean, HEART_RATE_STD), *(AF_RATE_RANGE if af else SINUS_RATE_RANGE))
    present = {name: _bernoulli_logit(rng, w, features) for name, w in PRESENCE_LOGITS.items()}
    present["has_image"] |= not any(present.values())
    return {"heart_rate": float(rate), **present}


def _audio_latents(rng, features: dict[str, float]) -> dict:
    drawn = {name: _bernoulli_logit(rng, w, features) for name, w in AUDIO_LOGITS.items()}
    murmur = ("aortic_stenosis" if drawn["aortic_stenosis"]
              else "mitral_regurgitation" if drawn["mitral_regurgitation"] else "")
    return {"has_audio": drawn["has_audio"], "murmur": murmur,
            "third_sound": drawn["third_sound"]}


def sample_patient(seed: int, index: int) -> Patient:
    """Samples patient `index` of corpus `seed`; depends on nothing else."""
    rng = patient_stream(seed, index, LATENT_STREAM)
    age = AGE_RANGE[0] + (AGE_RANGE[1] - AGE_RANGE[0]) * rng.beta(2.2, 1.8)
    male = bool(rng.random() < 0.5)
    body_size = float(np.clip(rng.normal(1.03 if male else 0.97, 0.04), 0.88, 1.12))
    features = {"constant": 1.0, "decades": (age - 60.0) / 10.0, "male": float(male)}
    present = {}
    for name, weights in FINDING_LOGITS.items():
        present[name] = _bernoulli_logit(rng, weights, features)
        features[name] = float(present[name])

    reduced_ef = present["reduced_ejection_fraction"]
    ctr = rng.uniform(*(ENLARGED_CTR if present["cardiomegaly"] else NORMAL_CTR))
    ef = rng.uniform(*REDUCED_EF) if reduced_ef else np.clip(rng.normal(*NORMAL_EF), 50.0, 75.0)
    effusion = nodule = pneumothorax = consolidation = None
    if present["pleural_effusion"]:
        sides_p = (0.3, 0.2, 0.5) if reduced_ef else (0.45, 0.35, 0.2)
        effusion = Effusion(pick(rng, EFFUSION_SIDES, sides_p), float(rng.uniform(0.15, 1.0)))
    if present["nodule"]:
        nodule = Nodule(
            pick(rng, SIDES),
            pick(rng, ZONES),
            float(np.round(rng.uniform(*NODULE_SIZE_MM))),
            (float(rng.random()), float(rng.random())),
        )
    if present["pneumothorax"]:
        pneumothorax = Pneumothorax(pick(rng, SIDES), float(rng.uniform(0.12, 0.4)))
    if present["consolidation"]:
        consolidation = Consolidation(pick(rng, SIDES), pick(rng, ZONES, (0.25, 0.3, 0.45)))
    risk = _bernoulli_logit(rng, RISK_LOGIT, features)
    later = _later_latents(patient_stream(seed, index, LATER_LATENT_STREAM), features)
    later |= _audio_latents(patient_stream(seed, index, AUDIO_LATENT_STREAM), features)
    return Patient(
        patient_id=index,
        age=float(age),
        sex="M" if male else "F",
        body_size=body_size,
        findings=tuple(present[name] for name in FINDINGS),
        cardiothoracic_ratio=float(ctr),
        ejection_fraction=float(ef),
        effusion=effusion,
        nodule=nodule,
        pneumothorax=pneumothorax,
        consolidation=consolidation,
        risk=risk,
        **later,
    )
