"""12-lead ECGs of SynthMed patients: a cardiac dipole read along each lead, with artefacts."""

import numpy as np

from mmjax.data import schema
from mmjax.data.synthmed.beats import beat_times
from mmjax.data.synthmed.patients import Patient

# A sum of Gaussians per beat (as in ECGSYN) for a 3-D cardiac dipole, x to the patient's
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
    onsets, intervals = beat_times(patient, duration_s, rng)
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
