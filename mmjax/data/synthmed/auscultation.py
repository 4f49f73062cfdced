"""Heart sounds of SynthMed patients: their latents, heard through heart_sounds."""

import numpy as np

from mmjax.data import heart_sounds
from mmjax.data.synthmed.patients import Patient


def simulate_heart_sounds(patient: Patient, rate_hz: float, seconds: float,
                          rng: np.random.Generator) -> np.ndarray:
    """float32 [round(rate_hz * seconds)]: this patient's heart sounds at the apex."""
    return heart_sounds.phonocardiogram(
        rng, rate_hz=rate_hz, seconds=seconds, heart_rate=patient.heart_rate,
        atrial_fibrillation=patient.has("atrial_fibrillation"),
        ejection_fraction=patient.ejection_fraction, murmur=patient.murmur,
        third_sound=patient.third_sound)
