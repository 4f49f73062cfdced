"""SynthMed corpora: patients start .. start + N - 1 of a seed, every modality rendered."""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from mmjax.data import heart_sounds, schema
from mmjax.data.synthmed.auscultation import simulate_heart_sounds
from mmjax.data.synthmed.ecg import ECG_RATE_HZ, ECG_SECONDS, simulate_ecg
from mmjax.data.synthmed.echo import draw_echo
from mmjax.data.synthmed.patients import (
    AUDIO_STREAM,
    ECG_STREAM,
    ECHO_STREAM,
    FINDINGS,
    IMAGE_STREAM,
    REPORT_STREAM,
    Patient,
    patient_stream,
    sample_patient,
)
from mmjax.data.synthmed.radiograph import draw_radiograph
from mmjax.data.synthmed.reports import write_report

# Which Patient flag says a record holds each schema modality.
PRESENCE_FLAGS = {
    "image": "has_image",
    "video": "has_echo",
    "signal": "has_ecg",
    "audio": "has_audio",
    "report": "has_report",
}
LEGACY_MODALITIES = ("image", "report")


class _Renderer(NamedTuple):
    stream: int  # the patient's random stream it draws from
    absent: np.ndarray | str  # the entry of a patient without the modality
    render: Callable[[Patient, np.random.Generator], np.ndarray | str]


def _renderers(image_size: int, frames: int, signal_rate_hz: int, signal_seconds: float,
               audio_rate_hz: float, audio_seconds: float) -> dict[str, _Renderer]:
    samples = round(signal_rate_hz * signal_seconds)
    return {
        "image": _Renderer(
            IMAGE_STREAM,
            np.zeros((image_size, image_size), np.uint16),
            lambda patient, rng: draw_radiograph(patient, image_size, rng),
        ),
        "video": _Renderer(
            ECHO_STREAM,
            np.zeros((frames, image_size, image_size), np.uint8),
            lambda patient, rng: draw_echo(patient, frames, image_size, rng),
        ),
        "signal": _Renderer(
            ECG_STREAM,
            np.zeros((samples, len(schema.ECG_LEADS)), np.float32),
            lambda patient, rng: simulate_ecg(patient, signal_rate_hz, signal_seconds, rng),
        ),
        "audio": _Renderer(
            AUDIO_STREAM,
            np.zeros(round(audio_rate_hz * audio_seconds), np.float32),
            lambda patient, rng: simulate_heart_sounds(patient, audio_rate_hz, audio_seconds,
                                                       rng),
        ),
        "report": _Renderer(REPORT_STREAM, "", write_report),
    }


def _render(renderer: _Renderer, patients: list[Patient], present: np.ndarray, seed: int):
    """Each patient's entry, `renderer.absent` where not present: an array, or a list of text."""
    entries = [
        renderer.render(p, patient_stream(seed, p.patient_id, renderer.stream))
        if has else renderer.absent
        for p, has in zip(patients, present, strict=True)
    ]
    if isinstance(renderer.absent, str):
        return entries
    return np.array(entries, renderer.absent.dtype).reshape(-1, *renderer.absent.shape)


def _latents(patients: list[Patient]) -> dict[str, np.ndarray]:
    """Every patient's findings, age, sex and risk outcome."""
    return {
        "labels": np.array([p.findings for p in patients], np.uint8).reshape(-1, len(FINDINGS)),
        "age": np.array([p.age for p in patients], np.float32),
        "sex": np.array([p.sex == "M" for p in patients], np.uint8),
        "risk": np.array([p.risk for p in patients], np.uint8),
    }


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
    renderers = _renderers(image_size, frames, signal_rate_hz, signal_seconds, audio_rate_hz,
                           audio_seconds)
    corpus, present = {"patient_id": ids}, {}
    for modality in requested:
        flag = PRESENCE_FLAGS[modality]
        present[modality] = np.array(
            [modalities is None or getattr(p, flag) for p in patients], bool
        )
        corpus[modality] = _render(renderers[modality], patients, present[modality], seed)
    corpus |= _latents(patients)
    if modalities is not None:
        corpus |= {f"has_{modality}": present[modality] for modality in requested}
    if "video" in requested:
        corpus["ejection_fraction"] = np.array([p.ejection_fraction for p in patients], np.float32)
    if "audio" in requested:
        corpus["murmur"] = np.array([p.murmur for p in patients], str)
    return corpus
