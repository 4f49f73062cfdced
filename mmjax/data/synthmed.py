"""SynthMed: synthetic patients with known ground truth in four modalities.

Real corpora come with noisy, partly unknown labels, so one cannot tell what a
multimodal model has learned. Here each patient is drawn from a small model of
correlated findings (`Patient`), and every modality is rendered from that latent
state, so retrieval and zero-shot probes have exact answers:

  image   PA chest radiograph phantom (`draw_radiograph`): cardiomegaly, effusion, ...
  video   apical four-chamber echo clip (`draw_echo`): LV size, ejection fraction, rhythm
  signal  12-lead ECG (`simulate_ecg`): rhythm (AF), rate, QRS voltage and width
  audio   heart sounds at the apex (`heart_sounds.phonocardiogram`): rhythm (AF), rate, a soft
          S1 and an S3 gallop with reduced EF, murmurs of mitral regurgitation (with reduced
          EF) and aortic stenosis (with age; heard, not in the findings or the reports)
  report  free-text radiology report (`write_report`)

As in real records, some patients lack some modalities (`Patient.has_*`); echo is
ordered more often when the heart is suspect, an ECG more often in AF.

A patient is a pure function of (seed, index), with one random stream per part
(latent, image, report, echo, ECG, later latents): any host can generate any shard,
and adding a modality leaves the existing ones unchanged.
"""

import dataclasses
import re

import numpy as np

from mmjax.data import heart_sounds, schema
from mmjax.data.rhythm import AF_RR_CV, BREATHING_HZ, MIN_RR_S, SINUS_JITTER, SINUS_VARIATION

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

# Radiograph geometry, in patient units: x to the image right (the patient's left), y down,
# the image spans [-1, 1] before the acquisition pose and body size are applied.
MIN_IMAGE_SIZE = 16
MAX_PIXEL = 4095
THORAX_HALF_WIDTH = 0.74
THORAX_WIDTH_MM = 300.0
LUNG_CENTER, LUNG_HALF_AXES = (0.42, 0.10), (0.32, 0.86)  # per side, x mirrored
DOME_TOP = {"right": 0.30, "left": 0.36}  # the right hemidiaphragm sits higher
DOME_DROP = 0.24  # from the dome top down to the costophrenic angles
DOME_PEAK = 0.32  # distance of the dome top from the midline
ZONE_Y = {"upper": (-0.60, -0.28), "middle": (-0.28, 0.04), "lower": (0.04, 0.30)}
HILUM = (0.18, -0.05)
COLLAPSE_ANCHOR = (0.12, 0.40)  # a collapsing lung shrinks towards its hilum and base
HEART_CENTER_Y, HEART_HALF_HEIGHT = 0.24, 0.33
HEART_LEFTWARD = 0.65  # fraction of the heart width to the patient's left of the midline
EFFUSION_HEIGHT = (0.08, 0.4)  # fluid height above the costophrenic angle: base, per severity
MENISCUS_RISE = 0.25  # extra height of the fluid along the lateral chest wall
RIB_SPACING = 0.14
VESSEL_BRANCHES = 16  # vessels fanning out of each hilum over a full turn

# X-ray attenuation ("density") of each tissue; exposure maps density to pixel values.
LUNG, PNEUMOTHORAX_AIR = 0.18, 0.05
SOFT_TISSUE, MEDIASTINUM, HEART, ABDOMEN, FLUID = 0.5, 0.62, 0.68, 0.64, 0.6
SPINE, CLAVICLE, RIB, VESSELS = 0.10, 0.22, 0.05, 0.14
NODULE, CONSOLIDATION, PLEURAL_LINE = 0.40, 0.36, 0.12

# Acquisition variation.
MAX_ROTATION_DEG, MAX_ZOOM, MAX_SHIFT = 3.0, 0.04, 0.04
GAIN, OFFSET, GAMMA = (2700.0, 3800.0), (50.0, 400.0), (0.8, 1.25)
MAX_GRADIENT = 0.08  # relative intensity change across the image
QUANTUM_NOISE, READ_NOISE = (0.6, 1.6), (5.0, 25.0)

# Reports.
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

BEAT_MARGIN_S = 0.5  # beats up to this long after the record still show (the next P wave)
SYSTOLE_S = 0.32  # at RR = 1 s; scales with sqrt(RR), as the QT interval does
ATRIAL_KICK = 0.2  # share of ventricular filling from atrial contraction, none in AF

# Echo: an apical four-chamber view; x to the image right and depth y down from the probe, as
# fractions of the image side. The left heart is on the image right, the apices at the top.
ECHO_FPS = 10.0  # 16 frames span 1.6 s: 1.5-2 beats at resting rates
PROBE_Y, SECTOR_DEPTH, SECTOR_HALF_ANGLE = 0.02, 0.92, np.deg2rad(42.0)
HEART_SIZE_EXPONENT = 0.5  # chamber size ~ (CTR / mean normal CTR) ** this ...
HEART_SIZE_ORIGIN = (0.5, 0.1)  # ... about the apex, so a large heart reaches deeper
# Ventricles (LV, RV) hang from their apex (x, y) with end-diastolic half width and half length,
# tilted (x shift per unit depth) and narrowed towards the apex (width change per half length);
# each atrium spans from under its ventricle's base (the moving valve plane) to a fixed floor.
VENTRICLE_APICES, VENTRICLE_HALF_AXES = ((0.54, 0.13), (0.44, 0.22)), ((0.12, 0.25), (0.085, 0.2))
VENTRICLE_TILTS, VENTRICLE_TAPER = (0.2, -0.25), 0.3
ATRIUM_HALF_WIDTHS, ATRIUM_FLOOR, VALVE_GAP = (0.13, 0.11), 0.93, 0.04
ATRIAL_WIDENING = 0.15  # atria fill while the ventricles empty
WALL = (0.035, 0.022, 0.015, 0.015)  # end-diastolic wall of LV, RV, LA, RA
# Volume ~ area ** 1.5 (a shape scaling alike in all three dimensions), so the end-systolic LV
# area is (1 - EF) ** (1 / 1.5) of the end-diastolic one. Widths take WIDTH_SHARE of the area
# change (the LV shortens less than it narrows); the wall keeps its area and thickens.
VOLUME_AREA_EXPONENT, WIDTH_SHARE = 1.5, 0.6
RV_END_SYSTOLIC_AREA = 0.6
# Echogenicity (amplitude, myocardium 1), shown log-compressed over a dynamic range.
TISSUE_ECHO, BLOOD_ECHO, TISSUE_TEXTURE = 0.06, 0.005, 0.6
ECHO_GAIN_DB, DYNAMIC_RANGE_DB, ATTENUATION_DB = (-10.0, -4.0), (50.0, 60.0), (4.0, 10.0)
SPECKLE_PERSISTENCE = 0.6  # share of the speckle intensity that stays from frame to frame
PROBE_OFFSET, PROBE_JITTER = 0.015, 0.004  # clip offset; random walk step per frame

# ECG: a sum of Gaussians per beat (as in ECGSYN) for a 3-D cardiac dipole, x to the patient's
# left, y to the feet, z anterior. Each lead reads the dipole along its lead vector, so the
# leads agree as in a real recorder. Per wave: time from the R peak (s; T's scales with
# sqrt(RR)), width (s), amplitude (mV), direction (R's: the patient's QRS axis).
ECG_RATE_HZ, ECG_SECONDS = 100, 10.0  # PTB-XL's low-rate format
ECG_WAVES = {
    "P": (-0.15, 0.022, 0.15, (0.5, 0.75, 0.3)),
    "Q": (-0.028, 0.009, 0.15, (-0.7, 0.1, 0.7)),  # septal activation, left to right
    "R": (0.0, 0.011, 1.6, None),
    "S": (0.03, 0.012, 0.5, (-0.3, -0.3, -0.9)),
    "T": (0.3, 0.05, 0.35, (0.6, 0.6, 0.45)),
}
QRS_AXIS_DEG, R_POSTERIOR = (45.0, 18.0, -30.0, 95.0), -0.1  # axis mean, std, range
WAVE_AMPLITUDE_JITTER, WAVE_DIRECTION_JITTER, BEAT_AMPLITUDE_JITTER = 0.15, 0.08, 0.03
# Reduced EF: lower and wider QRS, and in some a left bundle branch block: the septum activates
# from the left, the QRS is broad and notched, no S wave, T opposite to the QRS.
REDUCED_EF_QRS_SCALE, REDUCED_EF_QRS_WIDENING, LBBB_PROBABILITY = (0.55, 0.85), 1.3, 0.3
LBBB_Q, LBBB_R = (-0.035, 0.02, 0.9), (0.02, 0.022)  # offset, width (, amplitude / R's)
LVH_PROBABILITY, LVH_VOLTAGE = 0.5, (1.3, 1.8)  # cardiomegaly, sometimes with high voltage
FIBRILLATION_HZ, FIBRILLATION_MV, FIBRILLATION_DIRECTION = (4.0, 9.0), (0.03, 0.1), (0.3, 0.5, 0.8)
FIBRILLATION_DRIFT_HZ, FIBRILLATION_DRIFT_RAD = 0.3, 2.0  # slow phase modulation
# A recorder samples I, II and V1-V6 and derives III, aVR, aVL and aVF by Einthoven's and
# Goldberger's laws. Limb leads in the frontal plane (degrees from the left towards the feet);
# chest leads in the transverse plane (degrees from the left towards anterior) and their gain
# from closeness to the heart.
LIMB_LEAD_DEG = {"I": 0.0, "II": 60.0}
CHEST_LEADS = {  # angle, gain, inferior component (V4-V6 sit below the heart's centre)
    "V1": (115.0, 1.2, 0.0),
    "V2": (90.0, 1.8, 0.0),
    "V3": (72.0, 1.9, 0.1),
    "V4": (55.0, 1.8, 0.2),
    "V5": (28.0, 1.5, 0.3),
    "V6": (0.0, 1.1, 0.3),
}
LIMB_LEADS_FROM_I_II = {
    "I": (1.0, 0.0),
    "II": (0.0, 1.0),
    "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5),
    "aVL": (1.0, -0.5),
    "aVF": (-0.5, 1.0),
}
# Artefacts that a filter stage must remove, per recorded channel (wander: two frequencies, each
# with a normal amplitude of this scale per sine and cosine).
BASELINE_WANDER_HZ, BASELINE_WANDER_MV = (0.1, 0.5), 0.125
MAINS_HZ, MAINS_MV, WHITE_NOISE_MV = (50.0, 60.0), (0.01, 0.05), (0.005, 0.02)

# Corpus: which Patient flag says a record holds each schema modality.
PRESENCE_FLAGS = {
    "image": "has_image",
    "video": "has_echo",
    "signal": "has_ecg",
    "audio": "has_audio",
    "report": "has_report",
}
LEGACY_MODALITIES = ("image", "report")


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


def _stream(seed: int, index: int, part: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, part])


def _pick(rng: np.random.Generator, options, p=None):
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


def simulate_heart_sounds(patient: Patient, rate_hz: float, seconds: float,
                          rng: np.random.Generator) -> np.ndarray:
    return heart_sounds.phonocardiogram(
        rng, rate_hz=rate_hz, seconds=seconds, heart_rate=patient.heart_rate,
        atrial_fibrillation=patient.has("atrial_fibrillation"),
        ejection_fraction=patient.ejection_fraction, murmur=patient.murmur,
        third_sound=patient.third_sound)


def sample_patient(seed: int, index: int) -> Patient:
    """Samples patient `index` of corpus `seed`; depends on nothing else."""
    rng = _stream(seed, index, LATENT_STREAM)
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
        effusion = Effusion(_pick(rng, EFFUSION_SIDES, sides_p), float(rng.uniform(0.15, 1.0)))
    if present["nodule"]:
        nodule = Nodule(
            _pick(rng, SIDES),
            _pick(rng, ZONES),
            float(np.round(rng.uniform(*NODULE_SIZE_MM))),
            (float(rng.random()), float(rng.random())),
        )
    if present["pneumothorax"]:
        pneumothorax = Pneumothorax(_pick(rng, SIDES), float(rng.uniform(0.12, 0.4)))
    if present["consolidation"]:
        consolidation = Consolidation(_pick(rng, SIDES), _pick(rng, ZONES, (0.25, 0.3, 0.45)))
    risk = _bernoulli_logit(rng, RISK_LOGIT, features)
    later = _later_latents(_stream(seed, index, LATER_LATENT_STREAM), features)
    later |= _audio_latents(_stream(seed, index, AUDIO_LATENT_STREAM), features)
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


# ---------------------------------------------------------------------------------------------
# Radiograph.


def _side_sign(side: str) -> float:
    """Image x direction of a patient side: the patient's right is on the image left."""
    return -1.0 if side == "right" else 1.0


def _inside(signed_distance, edge: float):
    """Anti-aliased mask: 1 inside (negative distance), 0 outside, `edge` wide."""
    return 0.5 - 0.5 * np.tanh(signed_distance / edge)


def _ellipse_distance(x, y, center, half_axes):
    """Approximate signed distance to an axis-aligned ellipse (negative inside)."""
    (cx, cy), (a, b) = center, half_axes
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * min(a, b)


def _waves(rng, x, y, count: int, frequency: float):
    """Smooth random field with unit variance: plane waves in random directions."""
    angles = rng.uniform(0.0, 2 * np.pi, count)
    wave_x, wave_y = frequency * rng.uniform(0.7, 1.3, count) * [np.cos(angles), np.sin(angles)]
    phases = rng.uniform(0.0, 2 * np.pi, count)
    field = sum(
        np.cos(fx * x + fy * y + p)
        for fx, fy, p in zip(wave_x.tolist(), wave_y.tolist(), phases.tolist(), strict=True)
    )
    return field * np.sqrt(2.0 / count).item()


def _check_size(size: int) -> None:
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} is below the minimum of {MIN_IMAGE_SIZE}")


def _patient_grid(size: int, body_size: float, rng):
    """Pixel centres in patient units under a random pose; returns x, y and the pixel size."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    image_x, image_y = np.meshgrid(axis, axis)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    zoom = body_size * rng.uniform(1.0 - MAX_ZOOM, 1.0 + MAX_ZOOM)
    shift_x, shift_y = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    cos, sin = np.float32(np.cos(angle) / zoom), np.float32(np.sin(angle) / zoom)
    dx, dy = image_x - np.float32(shift_x), image_y - np.float32(shift_y)
    return cos * dx + sin * dy, cos * dy - sin * dx, 2.0 / (size * zoom)


def _lung_geometry(side: str, scale: float = 1.0):
    """Center and half axes of a lung's ellipse, optionally collapsed by `scale`."""
    sign = _side_sign(side)
    (cx, cy), (ax, ay) = LUNG_CENTER, LUNG_HALF_AXES
    anchor_x, anchor_y = COLLAPSE_ANCHOR
    center = (sign * (anchor_x + (cx - anchor_x) * scale), anchor_y + (cy - anchor_y) * scale)
    return center, (ax * scale, ay * scale)


def _dome(x, side: str):
    """Upper border of a hemidiaphragm: highest medially, lowest at the costophrenic angle."""
    lateral_edge = LUNG_CENTER[0] + LUNG_HALF_AXES[0]
    distance = (_side_sign(side) * x - DOME_PEAK) / (lateral_edge - DOME_PEAK)
    return DOME_TOP[side] + DOME_DROP * distance**2


def _lung_mask(x, y, px: float, side: str):
    """One lung field: its ellipse above the hemidiaphragm."""
    in_ellipse = _inside(_ellipse_distance(x, y, *_lung_geometry(side)), px)
    return in_ellipse * _inside(y - _dome(x, side), px)


def _zone_point(side: str, zone: str, lateral: float, vertical: float):
    """A point inside a lung zone from (medial-to-lateral, top-to-bottom) fractions."""
    (cx, cy), (ax, ay) = LUNG_CENTER, LUNG_HALF_AXES
    top, bottom = ZONE_Y[zone]
    y = top + (bottom - top) * vertical
    half_width = ax * max(1.0 - ((y - cy) / ay) ** 2, 0.0) ** 0.5
    return _side_sign(side) * (cx + half_width * (1.2 * lateral - 0.4)), y


def _anatomy(x, y, px: float, ctr: float, lung_density, fluid):
    """Body, lungs (given their own density and pleural fluid), mediastinum, heart and bones."""
    abs_x = np.abs(x)
    body = np.minimum(
        ((abs_x / 0.94) ** 4 + ((y - 0.25) / 1.15) ** 4) ** 0.25 - 1.0,
        np.maximum(abs_x - 0.2, y + 0.8),  # neck
    )
    density = SOFT_TISSUE * _inside(body, px)
    diaphragm = np.where(x < 0, _dome(x, "right"), _dome(x, "left"))
    density += _inside(diaphragm - y, px) * (ABDOMEN * _inside(body, px) - density)
    lungs = _lung_mask(x, y, px, "right") + _lung_mask(x, y, px, "left")
    density += lungs * (lung_density - density)
    density += fluid * (FLUID - density)

    upper_mediastinum = np.maximum(np.abs(x - 0.01) - 0.1, np.maximum(y - 0.35, -0.95 - y))
    aortic_knob = _ellipse_distance(x, y, (0.1, -0.3), (0.07, 0.07))
    density += _inside(np.minimum(upper_mediastinum, aortic_knob), px) * (MEDIASTINUM - density)
    heart_width = ctr * 2 * THORAX_HALF_WIDTH
    heart_center = ((HEART_LEFTWARD - 0.5) * heart_width, HEART_CENTER_Y)
    heart = _inside(_ellipse_distance(x, y, heart_center, (heart_width / 2, HEART_HALF_HEIGHT)), px)
    density += heart * (HEART - density)

    vertebrae = 0.8 + 0.2 * np.cos(2 * np.pi * y / 0.09)
    density += SPINE * vertebrae * _inside(abs_x - 0.055, px)
    clavicle_y = -0.68 - 0.15 * abs_x + 0.35 * (abs_x - 0.3) ** 2
    along_clavicles = _inside(np.abs(abs_x - 0.35) - 0.27, px)
    density += CLAVICLE * along_clavicles * _inside(np.abs(y - clavicle_y) - 0.022, px)
    # Ribs fade out where they would alias (fewer than ~4 pixels apart).
    rib_visibility = min(max((RIB_SPACING / px - 3.0) / 3.0, 0.0), 1.0)
    rib_phase = 2 * np.pi * (y + 0.5 * abs_x - abs_x**2) / RIB_SPACING  # arching over the lungs
    ribs = np.clip((np.cos(rib_phase) - 0.5) / 0.5, 0.0, 1.0)
    return density + RIB * rib_visibility * ribs * lungs


def _lung_density(x, y, px: float, patient: Patient, rng):
    """Density of the aerated lungs: vessels fanning out of the hila, pneumothorax, opacities."""
    from_hilum_x, from_hilum_y = np.abs(x) - HILUM[0], y - HILUM[1]
    hilum_distance = np.sqrt(from_hilum_x**2 + from_hilum_y**2)
    bearing = np.arctan2(from_hilum_y, from_hilum_x) + 0.12 * _waves(rng, x, y, 4, 3.0 * np.pi)
    vessels = np.maximum(np.cos(VESSEL_BRANCHES * bearing), 0.0) ** 4
    density = LUNG + VESSELS * vessels * np.exp(-hilum_distance / 0.3)
    if patient.pneumothorax:
        side, collapse = patient.pneumothorax.side, 1.0 - patient.pneumothorax.size
        collapsed = _ellipse_distance(x, y, *_lung_geometry(side, collapse))
        in_lung = _inside(_ellipse_distance(x, y, *_lung_geometry(side)), px)
        density += in_lung * (1.0 - _inside(collapsed, px)) * (PNEUMOTHORAX_AIR - density)
        density += PLEURAL_LINE * in_lung * np.exp(-((collapsed / (0.8 * px)) ** 2))
    if patient.consolidation:
        cx, cy = _zone_point(patient.consolidation.side, patient.consolidation.zone, 0.6, 0.5)
        envelope = np.exp(-(((x - cx) / 0.17) ** 2 + ((y - cy) / 0.13) ** 2))
        patches = np.clip(0.7 + 0.5 * _waves(rng, x, y, 6, 7.0 * np.pi), 0.0, 1.0)
        density += CONSOLIDATION * envelope * patches
    return density


def _effusion(x, y, px: float, effusion: Effusion):
    """Fluid filling the costophrenic angles, its meniscus rising along the lateral wall."""
    sides = SIDES if effusion.side == "bilateral" else (effusion.side,)
    fluid = 0.0
    for side in sides:
        center, half_axes = _lung_geometry(side)
        lateral = np.clip((x - center[0]) / half_axes[0] * _side_sign(side) * 0.5 + 0.5, 0, 1)
        height = EFFUSION_HEIGHT[0] + EFFUSION_HEIGHT[1] * effusion.severity
        surface = DOME_TOP[side] + DOME_DROP - height - MENISCUS_RISE * lateral**2
        in_hemithorax = _inside(_ellipse_distance(x, y, center, half_axes), px)
        fluid = fluid + in_hemithorax * _inside(surface - y, 1.5 * px)
    return fluid


def _nodule(x, y, px: float, nodule: Nodule):
    cx, cy = _zone_point(nodule.side, nodule.zone, *nodule.position)
    radius = max(nodule.size_mm / 2 * 2 * THORAX_HALF_WIDTH / THORAX_WIDTH_MM, px)
    return _inside(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius, 0.7 * px)


def draw_radiograph(patient: Patient, size: int, rng: np.random.Generator) -> np.ndarray:
    """PA chest radiograph phantom: uint16 [size, size] with 12-bit values, air dark."""
    _check_size(size)
    # Every draw that does not depend on the findings comes first, so adding or removing a
    # finding changes the image only where the finding is.
    x, y, px = _patient_grid(size, patient.body_size, rng)
    gain, offset, gamma = rng.uniform(*GAIN), rng.uniform(*OFFSET), rng.uniform(*GAMMA)
    tilt_x, tilt_y = rng.uniform(-MAX_GRADIENT, MAX_GRADIENT, 2).tolist()
    quantum, read = rng.uniform(*QUANTUM_NOISE), rng.uniform(*READ_NOISE)
    noise = rng.standard_normal((size, size), dtype=np.float32)

    lung_density = _lung_density(x, y, px, patient, rng)
    fluid = _effusion(x, y, px, patient.effusion) if patient.effusion else 0.0
    density = _anatomy(x, y, px, patient.cardiothoracic_ratio, lung_density, fluid)
    if patient.nodule:
        density += NODULE * _nodule(x, y, px, patient.nodule)

    signal = offset + gain * np.maximum(density, 0.0) ** gamma * (1.0 + tilt_x * x + tilt_y * y)
    signal += noise * np.sqrt(quantum**2 * signal + read**2)
    return np.clip(np.rint(signal), 0, MAX_PIXEL).astype(np.uint16)


# ---------------------------------------------------------------------------------------------
# Report.


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
    complaint = _pick(rng, COMPLAINTS)
    if rng.random() < 0.5:
        sex = _pick(rng, ("male", "man") if patient.sex == "M" else ("female", "woman"))
        parts = [f"{int(patient.age)}-year-old {sex} with {complaint}."]
    else:
        parts = [f"{_capitalize(complaint)}."]
    if patient.has("atrial_fibrillation") and rng.random() < HISTORY_PROBABILITY:
        parts.append(_pick(rng, ("History of atrial fibrillation.", "Known atrial fibrillation.")))
    if patient.has("reduced_ejection_fraction") and rng.random() < HISTORY_PROBABILITY:
        ef = f"{patient.ejection_fraction:.0f}%"
        history = (f"Heart failure with reduced EF ({ef}).", f"Reduced LV ejection fraction, {ef}.")
        parts.append(_pick(rng, history))
    return f"{_pick(rng, ('INDICATION:', 'CLINICAL HISTORY:'))} {' '.join(parts)}"


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
    sentences += [_pick(rng, NEGATIVE_SENTENCES[f]).format(ctr=ctr) for f in mentioned]
    return sentences


def write_report(patient: Patient, rng: np.random.Generator) -> str:
    """Free-text report: optional indication, FINDINGS (shuffled sentences), IMPRESSION."""
    indication = _indication(patient, rng)
    sentences, summaries = [], []
    for finding in (f for f in IMAGE_VISIBLE if patient.has(f)):
        nouns, statements = _describe(patient, finding)
        noun = _pick(rng, nouns)
        if rng.random() < HEDGE_PROBABILITY:
            noun = f"{_pick(rng, HEDGES)} {noun}"
            sentences.append(f"{_capitalize(noun)}.")
        elif rng.random() < 0.6:
            sentences.append(_pick(rng, statements))
        else:
            sentences.append(f"{_capitalize(noun)}.")
        summaries.append(noun)
    sentences += _negative_sentences(patient, rng)[: max(MAX_FINDING_SENTENCES - len(sentences), 0)]
    order = rng.permutation(len(sentences))
    findings = " ".join(sentences[i] for i in order) or NORMAL_FALLBACK

    if not summaries:
        impression = _pick(rng, NORMAL_IMPRESSIONS)
    elif len(summaries) == 1:
        impression = f"{_capitalize(summaries[0])}."
    elif rng.random() < NUMBERED_IMPRESSION_PROBABILITY:
        impression = " ".join(f"{i}. {_capitalize(s)}." for i, s in enumerate(summaries, 1))
    else:
        impression = f"{_capitalize(', '.join(summaries[:-1]))} and {summaries[-1]}."
    lines = [indication] if indication else []
    return "\n".join([*lines, f"FINDINGS: {findings}", f"IMPRESSION: {impression}"])


# ---------------------------------------------------------------------------------------------
# Rhythm.


def _beats(patient: Patient, seconds: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """R-wave times covering [0, seconds], and the RR interval after each.

    Sinus rhythm varies with breathing; AF is irregularly irregular. The record starts at a
    random point of a cycle.
    """
    mean_rr, count = 60.0 / patient.heart_rate, int((seconds + BEAT_MARGIN_S) / MIN_RR_S) + 2
    if patient.has("atrial_fibrillation"):
        shape = rng.uniform(*AF_RR_CV) ** -2.0
        intervals = np.maximum(mean_rr * rng.gamma(shape, 1.0 / shape, count), MIN_RR_S)
    else:
        breathing = 2 * np.pi * rng.uniform(*BREATHING_HZ) * mean_rr * np.arange(count)
        variation = rng.uniform(*SINUS_VARIATION) * np.sin(breathing + rng.uniform(0, 2 * np.pi))
        intervals = mean_rr * (1.0 + variation + SINUS_JITTER * rng.standard_normal(count))
    onsets = np.cumsum(intervals) - intervals[0] * (1.0 + rng.random())
    keep = onsets < seconds + BEAT_MARGIN_S
    return onsets[keep], intervals[keep]


def _contraction(times, onsets, intervals, atrial_kick: float) -> np.ndarray:
    """Ventricular emptying at `times`: 0 at end-diastole (the R wave), 1 at end-systole.

    Systole is a half cosine; diastole refills fast, then waits, then the atria top it up.
    """
    beat = np.searchsorted(onsets, times, side="right") - 1
    rr = intervals[beat]
    phase = (times - onsets[beat]) / rr
    systole = SYSTOLE_S / np.sqrt(rr)  # fraction of the cycle, below 0.6 as RR >= MIN_RR_S
    filled = np.clip((phase - systole) / (1.0 - systole), 0.0, 1.0)
    diastole = (1.0 - atrial_kick) * (1.0 - filled) ** 4 + atrial_kick * (1.0 - filled**6)
    return np.where(phase < systole, 0.5 - 0.5 * np.cos(np.pi * phase / systole), diastole)


# ---------------------------------------------------------------------------------------------
# Echo.


def _chambers(patient: Patient, contraction):
    """Per chamber (LV, RV, LA, RA) and frame: cavity centre x, y, half axes, tilt, taper, wall."""
    scale = (patient.cardiothoracic_ratio / np.mean(NORMAL_CTR)) ** HEART_SIZE_EXPONENT
    origin, tilt = np.array(HEART_SIZE_ORIGIN), np.array(VENTRICLE_TILTS)[:, None]
    apex_x, apex_y = (origin + scale * (np.array(VENTRICLE_APICES) - origin)).T[..., None]
    lv_end_systolic_area = (1.0 - patient.ejection_fraction / 100.0) ** (1 / VOLUME_AREA_EXPONENT)
    end_systolic_area = np.array([[lv_end_systolic_area], [RV_END_SYSTOLIC_AREA]])
    # Column 0 is end-diastole, whose wall area every frame keeps.
    contraction = np.concatenate([[0.0], contraction])
    area = 1.0 - (1.0 - end_systolic_area) * contraction  # [ventricles, 1 + frames]
    half_width, half_length = scale * np.array(VENTRICLE_HALF_AXES).T[..., None]
    width, length = half_width * area**WIDTH_SHARE, half_length * area ** (1.0 - WIDTH_SHARE)
    top = apex_y + 2 * length + scale * VALVE_GAP  # of the atria
    floor = origin[1] + scale * (ATRIUM_FLOOR - origin[1])
    atrium_width = scale * np.array(ATRIUM_HALF_WIDTHS)[:, None]
    cx = np.concatenate([apex_x + tilt * length, apex_x + 2 * tilt * length])
    cy = np.concatenate([apex_y + length, (top + floor) / 2])
    half_x = np.concatenate([width, atrium_width * (1.0 + ATRIAL_WIDENING * contraction)])
    half_y = np.concatenate([length, (floor - top) / 2])
    tilt = np.broadcast_to(np.concatenate([tilt, np.zeros_like(tilt)]), cx.shape)
    taper = np.broadcast_to([[VENTRICLE_TAPER]] * 2 + [[0.0]] * 2, cx.shape)
    wall = np.array(WALL)[:, None]
    wall_area = (half_x[:, :1] + wall) * (half_y[:, :1] + wall) - half_x[:, :1] * half_y[:, :1]
    walls = 0.5 * (np.sqrt((half_x + half_y) ** 2 + 4 * wall_area) - half_x - half_y)
    return tuple(q[:, 1:].astype(np.float32) for q in (cx, cy, half_x, half_y, tilt, taper, walls))


def _union_of_ellipses(axis, cx, cy, half_x, half_y, tilt, taper) -> np.ndarray:
    """Anti-aliased union of per-frame ellipses [chambers, frames] on the grid `axis`: [T, S, S].

    Tilt shears and taper narrows an ellipse along y; neither changes its area. Each ellipse
    is drawn only within its bounding box.
    """
    pixel = np.float32(1.0 / len(axis))
    cx, cy, half_x, half_y, tilt, taper = (
        q[..., None] for q in (cx, cy, half_x, half_y, tilt, taper)
    )
    down = (axis - cy) / half_y  # [C, T, rows]
    sharpness = np.minimum(half_x, half_y) * (0.5 / pixel)  # pixels per unit of radius**2
    middle = cx + tilt * half_y * down
    stretch = np.sqrt(sharpness) / (half_x * np.maximum(1.0 + taper * down, 0.5))
    rows = 0.5 + sharpness * (1.0 - down**2)
    reach = half_x * (1.0 + taper) + np.abs(tilt) * half_y + 2 * pixel
    bounds = [
        (cy - half_y - 2 * pixel).min((1, 2)),
        (cy + half_y + 2 * pixel).max((1, 2)),
        (cx - reach).min((1, 2)),
        (cx + reach).max((1, 2)),
    ]
    union = np.zeros((cx.shape[1], len(axis), len(axis)), np.float32)
    for c, (top, bottom, left, right) in enumerate(np.searchsorted(axis, bounds).T):
        box_rows = (c, slice(None), slice(top, bottom), None)
        across = (axis[left:right] - middle[box_rows]) * stretch[box_rows]
        inside = rows[box_rows] - across**2
        box = union[:, top:bottom, left:right]
        np.maximum(box, inside, out=box)
    return np.minimum(union, 1.0, out=union)


def draw_echo(patient: Patient, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Apical four-chamber B-mode clip at ECHO_FPS: uint8 [frames, size, size], 0 outside the fan.

    The LV's area follows the cardiac cycle, its excursion set by the ejection fraction and its
    size by the heart's; beats follow the patient's rhythm.
    """
    _check_size(size)
    axis = ((np.arange(size) + 0.5) / size).astype(np.float32)
    lateral, depth = axis[None, :] - 0.5, axis[:, None] - PROBE_Y
    radius = np.sqrt(lateral**2 + depth**2) / SECTOR_DEPTH
    fan = (radius < 1.0) & (np.abs(np.arctan2(lateral, depth)) < SECTOR_HALF_ANGLE)
    # Acquisition: gain, dynamic range, net attenuation after time-gain compensation, texture.
    gain, dynamic_range = rng.uniform(*ECHO_GAIN_DB), rng.uniform(*DYNAMIC_RANGE_DB)
    decibels = gain + dynamic_range - rng.uniform(*ATTENUATION_DB) * radius
    texture = TISSUE_TEXTURE * _waves(rng, *np.meshgrid(axis, axis), 4, 6 * np.pi)
    tissue = (TISSUE_ECHO * np.exp(texture)).astype(np.float32)
    # Fully developed speckle: exponential intensity, part of it persisting from frame to frame.
    persistent = SPECKLE_PERSISTENCE * rng.standard_exponential((size, size), np.float32) + 1e-6
    speckle = rng.random((frames, size, size), np.float32)
    speckle = np.log(1.0 - speckle, out=speckle)
    speckle *= SPECKLE_PERSISTENCE - 1.0
    speckle += persistent
    probe = rng.uniform(-PROBE_OFFSET, PROBE_OFFSET, 2) + np.cumsum(
        rng.normal(0.0, PROBE_JITTER, (frames, 2)), axis=0
    )

    onsets, intervals = _beats(patient, frames / ECHO_FPS, rng)
    atrial_kick = 0.0 if patient.has("atrial_fibrillation") else ATRIAL_KICK
    contraction = _contraction(np.arange(frames) / ECHO_FPS, onsets, intervals, atrial_kick)
    cx, cy, half_x, half_y, tilt, taper, walls = _chambers(patient, contraction)
    cx, cy = cx + probe[:, 0].astype(np.float32), cy + probe[:, 1].astype(np.float32)
    heart = _union_of_ellipses(axis, cx, cy, half_x + walls, half_y + walls, tilt, taper)
    blood = _union_of_ellipses(axis, cx, cy, half_x, half_y, tilt, taper)
    intensity = heart  # amplitude first: the myocardium is brightest, blood darkest
    intensity *= 1.0 - tissue
    intensity += tissue
    intensity += (BLOOD_ECHO - intensity) * blood
    intensity *= intensity
    intensity *= speckle
    # Log compression over the dynamic range to 0..255; far below it outside the fan.
    pixels = np.log10(intensity)
    pixels *= np.float32(10.0 * 255.0 / dynamic_range)
    pixels += np.where(fan, decibels * (255.0 / dynamic_range), -1e4).astype(np.float32)
    return np.clip(pixels, 0.0, 255.0, out=pixels).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# ECG.


def _unit(vectors):
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _recorded_lead_vectors() -> np.ndarray:
    """Lead vectors of the recorded channels I, II, V1-V6: [8, 3]."""
    limb = [(np.cos(a), np.sin(a), 0.0) for a in np.deg2rad(list(LIMB_LEAD_DEG.values()))]
    chest = [
        gain * np.array((np.cos(np.deg2rad(a)), inferior, np.sin(np.deg2rad(a))))
        for a, gain, inferior in CHEST_LEADS.values()
    ]
    return np.array(limb + chest)


def _leads_from_recorded() -> np.ndarray:
    """Linear map from the recorded channels to schema.ECG_LEADS: [8, 12]."""
    recorded = (*LIMB_LEAD_DEG, *CHEST_LEADS)
    columns = []
    for lead in schema.ECG_LEADS:
        column = np.zeros(len(recorded))
        if lead in LIMB_LEADS_FROM_I_II:
            column[:2] = LIMB_LEADS_FROM_I_II[lead]
        else:
            column[recorded.index(lead)] = 1.0
        columns.append(column)
    return np.stack(columns, axis=1)


RECORDED_LEAD_VECTORS, LEADS_FROM_RECORDED = _recorded_lead_vectors(), _leads_from_recorded()
P_WAVE, Q_WAVE, R_WAVE, S_WAVE, T_WAVE = (list(ECG_WAVES).index(name) for name in "PQRST")


def _ecg_waves(patient: Patient, rng):
    """This patient's wave offsets, widths, amplitudes [5] and unit directions [5, 3]."""
    offsets, widths, amplitudes = (np.array([w[i] for w in ECG_WAVES.values()]) for i in range(3))
    qrs_axis = np.deg2rad(np.clip(rng.normal(*QRS_AXIS_DEG[:2]), *QRS_AXIS_DEG[2:]))
    r_direction = (np.cos(qrs_axis), np.sin(qrs_axis), R_POSTERIOR)
    directions = np.array([r_direction if d is None else d for *_, d in ECG_WAVES.values()])
    directions = _unit(directions + WAVE_DIRECTION_JITTER * rng.standard_normal(directions.shape))
    amplitudes *= np.exp(WAVE_AMPLITUDE_JITTER * rng.standard_normal(len(amplitudes)))
    if patient.has("atrial_fibrillation"):
        amplitudes[P_WAVE] = 0.0
    qrs = slice(Q_WAVE, S_WAVE + 1)
    if patient.has("reduced_ejection_fraction"):
        amplitudes[qrs] *= rng.uniform(*REDUCED_EF_QRS_SCALE)
        widths[qrs] *= REDUCED_EF_QRS_WIDENING
        if rng.random() < LBBB_PROBABILITY:
            offsets[Q_WAVE], widths[Q_WAVE], relative = LBBB_Q
            offsets[R_WAVE], widths[R_WAVE] = LBBB_R
            amplitudes[Q_WAVE], amplitudes[S_WAVE] = relative * amplitudes[R_WAVE], 0.0
            directions[Q_WAVE], directions[T_WAVE] = -directions[Q_WAVE], -directions[R_WAVE]
    if patient.has("cardiomegaly") and rng.random() < LVH_PROBABILITY:
        amplitudes[qrs] *= rng.uniform(*LVH_VOLTAGE)
    return offsets, widths, amplitudes, directions


def _fibrillation(times, rng) -> np.ndarray:
    """AF's fibrillatory baseline: a few wandering 4-9 Hz oscillations, in mV."""
    hertz, phases = rng.uniform(*FIBRILLATION_HZ, 3), rng.uniform(0, 2 * np.pi, (2, 3))
    drift = FIBRILLATION_DRIFT_RAD * np.sin(
        2 * np.pi * FIBRILLATION_DRIFT_HZ * times[:, None] + phases[0]
    )
    waves = np.sin(2 * np.pi * hertz * times[:, None] + phases[1] + drift)
    return rng.uniform(*FIBRILLATION_MV) * waves.mean(axis=1) * np.sqrt(2.0)


def _artefacts(times, channels: int, rng) -> np.ndarray:
    """Baseline wander, mains hum and amplifier noise per recorded channel: [N, channels] mV."""
    angles = 2 * np.pi * rng.uniform(*BASELINE_WANDER_HZ, 2) * times[:, None]
    mixing = rng.normal(0.0, BASELINE_WANDER_MV, (4, channels))  # random amplitude and phase
    wander = np.concatenate([np.sin(angles), np.cos(angles)], axis=1) @ mixing
    mains_hz, mains_phase = rng.choice(MAINS_HZ), rng.uniform(0, 2 * np.pi)
    mains_mv = rng.uniform(*MAINS_MV) * rng.uniform(0.3, 1.0, channels)
    mains = np.sin(2 * np.pi * mains_hz * times + mains_phase)[:, None] * mains_mv
    white = rng.uniform(*WHITE_NOISE_MV) * rng.standard_normal((len(times), channels))
    return wander + mains + white


def simulate_ecg(
    patient: Patient, rate_hz: int, duration_s: float, rng: np.random.Generator, noise: bool = True
) -> np.ndarray:
    """12-lead ECG: float32 [round(rate_hz * duration_s), 12] in mV, schema.ECG_LEADS order.

    With `noise`, adds what a filter stage must remove (baseline wander, mains hum, white noise);
    without, returns the clean signal that the same rng gives underneath, the filter's target.
    """
    times = np.arange(round(rate_hz * duration_s)) / rate_hz
    offsets, widths, amplitudes, directions = _ecg_waves(patient, rng)
    onsets, intervals = _beats(patient, duration_s, rng)
    qt_scale = np.where(np.arange(len(offsets)) == T_WAVE, np.sqrt(intervals)[:, None], 1.0)
    beat_scale = 1.0 + BEAT_AMPLITUDE_JITTER * rng.standard_normal((len(onsets), 1))
    vectors = (beat_scale * amplitudes)[..., None] * directions  # [beats, waves, 3]
    # In float32: where float64 underflows to 0, exp is ten times slower.
    peaks = (onsets[:, None] + offsets * qt_scale).astype(np.float32)
    distance = (times.astype(np.float32)[:, None, None] - peaks) / widths.astype(np.float32)
    gaussians = np.exp(-0.5 * distance**2).reshape(len(times), -1)  # [N, beats * waves]
    dipole = gaussians @ vectors.reshape(-1, 3).astype(np.float32)  # [N, 3]
    if patient.has("atrial_fibrillation"):
        dipole += _fibrillation(times, rng)[:, None] * _unit(np.array(FIBRILLATION_DIRECTION))
    recorded = dipole @ RECORDED_LEAD_VECTORS.T
    if noise:
        recorded += _artefacts(times, recorded.shape[1], rng)
    return (recorded @ LEADS_FROM_RECORDED).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Corpus.


def generate(
    num_patients: int,
    seed: int = 0,
    image_size: int = 64,
    start: int = 0,
    *,
    frames: int = 16,
    signal_rate_hz: int = ECG_RATE_HZ,
    signal_seconds: float = ECG_SECONDS,
    modalities: tuple[str, ...] | None = None,
    audio_rate_hz: float = heart_sounds.AUDIO_RATE_HZ,
    audio_seconds: float = heart_sounds.AUDIO_SECONDS,
) -> dict:
    """Patients start .. start + num_patients - 1 of corpus `seed`, as arrays and reports.

    `modalities=None` gives the original corpus: every patient's image and report, complete.
    Naming modalities (of schema.MODALITIES) renders those, adds a presence mask
    `has_<modality>` [N] for each, and leaves absent entries zero (reports empty); "video"
    adds `ejection_fraction` [N], "audio" `murmur` [N] (str). Video frames are image_size
    square, at ECHO_FPS; heart sounds are at `audio_rate_hz`.
    """
    requested = LEGACY_MODALITIES if modalities is None else tuple(modalities)
    unknown = set(requested) - set(schema.MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {schema.MODALITIES}")
    ids = np.arange(start, start + num_patients, dtype=np.int64)
    patients = [sample_patient(seed, int(i)) for i in ids]
    samples = round(signal_rate_hz * signal_seconds)
    renderers = {  # stream, an absent entry, renderer
        "image": (
            IMAGE_STREAM,
            np.zeros((image_size, image_size), np.uint16),
            lambda patient, rng: draw_radiograph(patient, image_size, rng),
        ),
        "video": (
            ECHO_STREAM,
            np.zeros((frames, image_size, image_size), np.uint8),
            lambda patient, rng: draw_echo(patient, frames, image_size, rng),
        ),
        "signal": (
            ECG_STREAM,
            np.zeros((samples, len(schema.ECG_LEADS)), np.float32),
            lambda patient, rng: simulate_ecg(patient, signal_rate_hz, signal_seconds, rng),
        ),
        "audio": (
            AUDIO_STREAM,
            np.zeros(round(audio_rate_hz * audio_seconds), np.float32),
            lambda patient, rng: simulate_heart_sounds(patient, audio_rate_hz, audio_seconds,
                                                       rng),
        ),
        "report": (REPORT_STREAM, "", write_report),
    }
    corpus, present = {"patient_id": ids}, {}
    for modality in requested:
        stream, absent, render = renderers[modality]
        flag = PRESENCE_FLAGS[modality]
        present[modality] = np.array(
            [modalities is None or getattr(p, flag) for p in patients], bool
        )
        entries = [
            render(p, _stream(seed, p.patient_id, stream)) if has else absent
            for p, has in zip(patients, present[modality], strict=True)
        ]
        if modality == "report":
            corpus[modality] = entries
        else:
            corpus[modality] = np.array(entries, absent.dtype).reshape(-1, *absent.shape)
    corpus |= {
        "labels": np.array([p.findings for p in patients], np.uint8).reshape(-1, len(FINDINGS)),
        "age": np.array([p.age for p in patients], np.float32),
        "sex": np.array([p.sex == "M" for p in patients], np.uint8),
        "risk": np.array([p.risk for p in patients], np.uint8),
    }
    if modalities is not None:
        corpus |= {f"has_{modality}": present[modality] for modality in requested}
    if "video" in requested:
        corpus["ejection_fraction"] = np.array([p.ejection_fraction for p in patients], np.float32)
    if "audio" in requested:
        corpus["murmur"] = np.array([p.murmur for p in patients], str)
    return corpus


def window(image, center: float = 2048.0, width: float = 4096.0) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1), scaled to float32 [0, 1]."""
    if width <= 1.0:
        raise ValueError(f"window width must exceed 1, got {width}")
    scaled = (np.asarray(image, np.float32) - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
