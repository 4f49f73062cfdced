"""When a SynthMed patient's heart beats: R-wave times, shared by the echo and the ECG."""

import numpy as np

from mmjax.data.rhythm import AF_RR_CV, BREATHING_HZ, MIN_RR_S, SINUS_JITTER, SINUS_VARIATION
from mmjax.data.synthmed.patients import Patient

BEAT_MARGIN_S = 0.5  # beats up to this long after the record still show (the next P wave)


def beat_times(patient: Patient, seconds: float, rng) -> tuple[np.ndarray, np.ndarray]:
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
