"""What one stored example holds: fields, dtypes and shape conventions per modality.

A record is a dict of these fields; any modality may be absent (real records lack
some), which the pipeline turns into a presence mask. Shapes that depend on the
dataset (image size, frames, signal length) are fixed per dataset and recorded in
its manifest.
"""

import numpy as np

SCHEMA_VERSION = 1

# The standard 12-lead ECG order; signals with fewer leads are placed by name.
ECG_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# field -> (dtype, shape template). Letters are per-dataset sizes from the manifest:
# S image side, C channels, T frames, N signal samples, A audio samples.
FIELDS = {
    "patient_id": ("str", ()),
    "image": ("uint16", ("S", "S", "C")),  # windowed intensities over the full 16-bit range
    "video": ("uint8", ("T", "S", "S", "C")),
    "video_length": ("uint16", ()),  # real frames of a shorter clip; the rest are zeros
    "signal": ("float16", ("N", len(ECG_LEADS))),  # millivolts, leads in ECG_LEADS order
    "signal_leads": ("uint8", (len(ECG_LEADS),)),  # 1 where the lead was recorded
    "audio": ("float16", ("A",)),  # mono in [-1, 1] at the manifest's audio_rate_hz
    "audio_length": ("int32", ()),  # real samples of a shorter recording; the rest are zeros
    "report": ("str", ()),
    "labels": ("uint8", ("F",)),  # multi-label findings, names in the manifest
    "risk": ("uint8", ()),
    "age": ("float32", ()),
    "sex": ("uint8", ()),  # 0 female, 1 male
}
MODALITIES = ("image", "video", "signal", "audio", "report")

# The batch the pipeline feeds the model, defined once: per modality the fields its
# encoder reads, in the order an exported encoder takes them, as (dtype, shape template)
# per example (L text tokens; other letters as in FIELDS). Every batch also holds
# has_<modality> (bool) for each modality and the TARGETS.
MODEL_INPUTS = {
    "image": {"image": ("float32", ("S", "S", "C"))},
    "video": {"video": ("float32", ("T", "S", "S", "C")), "video_mask": ("bool", ("T",))},
    "signal": {"signal": ("float32", ("N", len(ECG_LEADS))),
               "signal_leads": ("bool", (len(ECG_LEADS),))},
    "audio": {"audio": ("float32", ("A",)), "audio_length": ("int32", ())},
    "report": {"text": ("int32", ("L",)), "text_mask": ("bool", ("L",))},
}
TARGETS = {"labels": ("float32", ("F",)), "has_labels": ("bool", ()),
           "risk": ("float32", ()), "has_risk": ("bool", ())}


def batch_layout(modalities, sizes: dict[str, int]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """field -> (dtype, shape per example) of a batch carrying `modalities`, with the
    letters of MODEL_INPUTS resolved from `sizes` (e.g. {"S": 64, "C": 1, "L": 96})."""
    layout = {f"has_{m}": ("bool", ()) for m in modalities}
    for m in modalities:
        layout.update(MODEL_INPUTS[m])
    layout.update(TARGETS)
    return {name: (dtype, tuple(sizes[d] if isinstance(d, str) else d for d in shape))
            for name, (dtype, shape) in layout.items()}


def modality_shapes(modalities, image_size: int, channels: int, frames: int,
                    signal_samples: int, audio_samples: int = 0) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the fields that carry `modalities`, for a manifest."""
    leads = len(ECG_LEADS)
    every = {
        "image": {"image": (image_size, image_size, channels)},
        "video": {"video": (frames, image_size, image_size, channels), "video_length": ()},
        "signal": {"signal": (signal_samples, leads), "signal_leads": (leads,)},
        "audio": {"audio": (audio_samples,), "audio_length": ()},
        "report": {"report": ()},
    }
    shapes = {}
    for modality in modalities:
        shapes.update(every[modality])
    return shapes


def image_to_stored(image01: np.ndarray) -> np.ndarray:
    """[0, 1] floats to the stored uint16 representation."""
    return np.round(np.clip(image01, 0.0, 1.0) * 65535.0).astype(np.uint16)


def stored_to_image(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / 65535.0
