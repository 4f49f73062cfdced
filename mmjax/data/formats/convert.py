"""Conversions from decoded arrays to the fixed shapes of stored examples (`schema`).

Readers keep each file's own geometry, rate and lead set; these functions bring any
of them to one dataset-wide shape, so every reader shares a single resize, resample
and lead-placement rule.
"""

import fractions
import re
from collections.abc import Sequence

import numpy as np
import scipy.signal
from PIL import Image

from mmjax.data import schema
from mmjax.data.formats import FormatError

LUMA_601 = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 RGB -> grey weights
# PIL's bilinear filter widens its support when shrinking, so downscaling is antialiased.
RESIZE_FILTER = Image.Resampling.BILINEAR
MAX_RATE_DENOMINATOR = 1000  # resampling ratios are approximated by fractions up to this
# Signals and audio are stored as float16: a finite sample beyond this would become Inf.
STORED_SAMPLE_MAX = float(np.finfo(np.float16).max)  # 65504
# Plausible rates; a header outside them is damaged or hostile, not a recording.
SIGNAL_RATE_HZ = (1.0, 100_000.0)  # ECG and other waveforms
AUDIO_RATE_HZ = (1_000.0, 768_000.0)
FRAME_RATE_FPS = (1e-3, 10_000.0)  # a frame every 17 minutes (dynamic studies) to high-speed

# Lead labels seen in the wild -> schema name; keys are upper case without spaces. "-aVR"
# (inverted aVR of the Cabrera display) is absent on purpose: its sign is flipped.
LEAD_ALIASES = {name.upper(): name for name in schema.ECG_LEADS} | {
    alias: lead
    for lead, aliases in {
        "I": ("D1", "DI", "MLI"),
        "II": ("D2", "DII", "MLII"),
        "III": ("D3", "DIII", "MLIII"),
    }.items()
    for alias in aliases
}
# Voltage units (lower case; UCUM codes as used by DICOM, WFDB spellings) -> mV per unit.
MILLIVOLTS_PER_UNIT = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3}


def lead_name(label: str) -> str | None:
    """Schema name of an ECG lead label ("Lead I (Einthoven)", "avr", "MLII"), or None."""
    key = re.sub(r"\(.*?\)", "", label).strip()
    key = re.sub(r"^lead", "", key, flags=re.IGNORECASE)
    return LEAD_ALIASES.get(re.sub(r"[\s_]", "", key).upper())


def millivolt_channels(
    signal: np.ndarray, units: Sequence[str], path: str
) -> tuple[np.ndarray, list[int]]:
    """Channels recorded in volts (any prefix) in mV, and their columns.

    Other channels (blood pressure, respiration, unknown units) are dropped. A kept
    sample that is NaN, Inf or too large to store raises (`check_samples`).
    """
    signal = np.asarray(signal, np.float64)
    scales = [MILLIVOLTS_PER_UNIT.get((unit or "").strip().lower()) for unit in units]
    columns = [column for column, scale in enumerate(scales) if scale is not None]
    millivolts = signal[:, columns] * np.asarray([scales[column] for column in columns])
    check_samples(path, millivolts, "millivolt samples")
    return millivolts.astype(np.float32), columns


def unusable_samples(values: np.ndarray) -> np.ndarray:
    """[non-finite, finite but beyond `STORED_SAMPLE_MAX`] counts of `values`."""
    infinite = np.count_nonzero(np.isinf(values))
    beyond = np.count_nonzero(np.abs(values) > STORED_SAMPLE_MAX) - infinite
    return np.array([values.size - np.count_nonzero(np.isfinite(values)), beyond])


def check_counts(path: str, unusable: np.ndarray, total: int, what: str):
    """Raise if `unusable_samples` found any: resampling would spread a NaN over its
    neighbours and float16 storage turns a huge value into Inf."""
    nonfinite, beyond = (int(count) for count in unusable)
    if nonfinite or beyond:
        raise FormatError(
            path,
            f"{nonfinite} non-finite and {beyond} out-of-range (|x| > {STORED_SAMPLE_MAX:g}) "
            f"of {total} {what}",
        )


def check_samples(path: str, values: np.ndarray, what: str):
    check_counts(path, unusable_samples(values), values.size, what)


def check_rate(path: str, rate: float, limits: tuple[float, float], what: str) -> float:
    """`rate` as a float if within `limits` (inclusive), else a FormatError naming it: an
    absurd rate would size resampling buffers or make every clip empty."""
    low, high = limits
    if not low <= rate <= high:  # also False for NaN
        raise FormatError(path, f"{what} {rate} is outside the plausible {low:g} to {high:g}")
    return float(rate)


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1) onto [0, 1]."""
    if not width >= 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    values = np.asarray(values, np.float64)
    if width == 1:  # the standard's limit case: a threshold
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0).astype(np.float32)


def window_spanning(low: float, high: float) -> tuple[float, float]:
    """(center, width) of the linear window that maps `low` to 0 and `high` to 1."""
    width = max(float(high) - float(low) + 1.0, 1.0)
    return float(low) + 0.5 + (width - 1.0) / 2.0, width


def _with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[H, W] or [H, W, 1|3] -> [H, W, channels] float32."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected [H, W], [H, W, 1] or [H, W, 3], got {image.shape}")
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return (image @ LUMA_601)[..., None]
    return np.repeat(image, 3, axis=-1)


def _square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """[H, W, C] -> [size, size, C]: centred on black padding, so the aspect ratio is kept."""
    height, width, channels = image.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side, channels), np.float32)
    square[top : top + height, left : left + width] = image
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(square[..., c])).resize(
                (size, size), RESIZE_FILTER
            )
        )
        for c in range(channels)
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def to_stored_image(image01: np.ndarray, size: int, channels: int) -> np.ndarray:
    """[H, W(, C)] in [0, 1] -> uint16 [size, size, channels], the stored image."""
    return schema.image_to_stored(_square_resize(_with_channels(image01, channels), size))


def frame_indices(num_frames: int, frames: int) -> np.ndarray:
    """`frames` indices at the centres of equal slices of the clip; short clips repeat frames."""
    return ((np.arange(frames) + 0.5) * num_frames / frames).astype(np.int64)


def sample_frames(video: np.ndarray, frames: int, size: int, channels: int) -> np.ndarray:
    """uint8 [T, H, W(, C)] -> uint8 [frames, size, size, channels], uniformly over time."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim not in (3, 4) or len(video) == 0:
        raise ValueError(
            f"expected a non-empty uint8 [T, H, W(, C)], got {video.dtype} {video.shape}"
        )
    unique, inverse = np.unique(frame_indices(len(video), frames), return_inverse=True)
    resized = np.stack(
        [_square_resize(_with_channels(video[i] / np.float32(255), channels), size) for i in unique]
    )
    return np.round(resized[inverse] * 255).astype(np.uint8)


def resample_signal(
    signal: np.ndarray, rate_hz: float, target_rate_hz: float, seconds: float
) -> np.ndarray:
    """[N, L] at `rate_hz` -> float32 [target_rate_hz * seconds, L]: polyphase resampling,
    then a centre crop or zero padding at the end."""
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2:
        raise ValueError(f"expected [N, L], got {signal.shape}")
    if not (np.isfinite(rate_hz) and rate_hz > 0 and target_rate_hz > 0):
        raise ValueError(f"rates must be positive, got {rate_hz} -> {target_rate_hz}")
    ratio = (fractions.Fraction(target_rate_hz) / fractions.Fraction(rate_hz)).limit_denominator(
        MAX_RATE_DENOMINATOR
    )
    if ratio != 1:
        signal = scipy.signal.resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)
    length = round(target_rate_hz * seconds)
    start = max((len(signal) - length) // 2, 0)
    out = np.zeros((length, signal.shape[1]), np.float32)
    kept = signal[start : start + length]
    out[: len(kept)] = kept
    return out


def place_leads(
    signal: np.ndarray, lead_names: Sequence[str], path: str = "<signal>"
) -> tuple[np.ndarray, np.ndarray]:
    """[N, L] with named leads -> (float32 [N, 12] in `schema.ECG_LEADS` order, uint8 [12] mask).

    Unknown leads are ignored, the first of duplicate leads wins, and leads not
    recorded are zero with mask 0. `path` names the source in errors.
    """
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2 or signal.shape[1] != len(lead_names):
        raise FormatError(
            path, f"{len(lead_names)} lead names for a signal of shape {signal.shape}"
        )
    placed = np.zeros((len(signal), len(schema.ECG_LEADS)), np.float32)
    mask = np.zeros(len(schema.ECG_LEADS), np.uint8)
    for column, label in enumerate(lead_names):
        name = lead_name(label)
        if name is None:
            continue
        slot = schema.ECG_LEADS.index(name)
        if not mask[slot]:
            placed[:, slot] = signal[:, column]
            mask[slot] = 1
    if not mask.any():
        raise FormatError(path, f"no ECG lead among {list(lead_names)}")
    return placed, mask
