"""DICOM files -> image, video, ECG signal or report, by what the file holds.

pydicom parses element values lazily, so a corrupt value can surface long after
`dcmread` returned; everything that touches the dataset runs under one guard that
turns parser errors into `FormatError`. Numbers the output depends on are checked, not
guessed at: a stated NaN or Inf (rescale, window, rates) names its tag, a rescale that
overflows and rates outside `convert`'s plausible ranges are errors, and the pixel count
the header promises is held to `MAX_PIXEL_VALUES` before anything is decoded.
"""

import dataclasses
import math
import re

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from mmjax.data.formats import FormatError, convert, existing_file

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Decoders hand back RGB for these: pydicom converts YBR_FULL(_422), JPEG 2000 codecs undo
# their own colour transform (ICT, RCT).
RGB_PHOTOMETRICS = ("RGB", "YBR_ICT", "YBR_RCT")
WINDOW_PERCENTILES = (0.5, 99.5)  # display range when the file gives no window
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
# Observation and acquisition context is who/when/how (and may name people), not findings.
SR_SKIPPED_RELATIONSHIPS = ("HAS OBS CONTEXT", "HAS ACQ CONTEXT")
# Decoded values (rows x columns x frames x samples) one file may hold: a few bytes of
# header can promise terabytes, which decoders allocate up front. 2**28 is 186 frames of
# 800 x 600 RGB; peak memory measured ~24 bytes a value for 16-bit grey (the rescale runs
# in float64), so up to 6 GiB at the budget.
MAX_PIXEL_VALUES = 2**28


@dataclasses.dataclass(frozen=True, eq=False)
class DicomItem:
    """What one DICOM file holds; only the fields of its `kind` are set."""

    kind: str
    pixels: np.ndarray | None = None  # image: float32 [H, W] modality values (HU), or [H, W, 3]
    window_center: float | None = None
    window_width: float | None = None
    photometric: str | None = None  # after decoding: MONOCHROME1, MONOCHROME2 or RGB
    frames: np.ndarray | None = None  # video: uint8 [T, H, W, C], windowed for display
    fps: float | None = None
    signal: np.ndarray | None = None  # signal: float32 [N, L] millivolts
    rate_hz: float | None = None
    lead_names: tuple[str, ...] = ()  # schema names where recognised, else the file's label
    text: str | None = None  # report

    def display01(self) -> np.ndarray:
        """The image windowed to [0, 1], bright meaning dense (MONOCHROME1 inverted)."""
        return _display01(self.pixels, self.window_center, self.window_width, self.photometric)


def read_dicom(path) -> DicomItem:
    path = existing_file(path)
    try:
        ds = pydicom.dcmread(path, force=False)
    except InvalidDicomError as e:
        raise FormatError(path, f"not a DICOM file ({e})") from e
    except Exception as e:
        raise FormatError.caused_by(path, "unreadable DICOM", e) from e
    try:
        return _item(ds, path)
    except FormatError:
        raise
    except Exception as e:
        raise FormatError.caused_by(path, "corrupt DICOM", e) from e


def _item(ds: pydicom.Dataset, path: str) -> DicomItem:
    if any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return _pixel_item(ds, path)
    if "WaveformSequence" in ds:
        return _waveform_item(ds, path)
    if "ContentSequence" in ds and (
        ds.get("Modality") == "SR" or str(ds.get("SOPClassUID", "")).startswith(SR_SOP_CLASS_PREFIX)
    ):
        return _report_item(ds, path)
    raise FormatError(
        path, "no pixel data, waveform or SR content (truncated or not a study object)"
    )


def _functional(ds: pydicom.Dataset, keyword: str):
    """`keyword` at the top level, else in the shared or first per-frame functional groups
    of enhanced multi-frame objects; None if absent or empty."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        sequence = ds.get(groups)
        for element in sequence[0] if sequence else ():  # macros: one-item sequences
            if element.VR == "SQ" and element.value:
                value = element.value[0].get(keyword)
                if value not in (None, ""):
                    return value
    return None


def _number(ds: pydicom.Dataset, keyword: str, path: str) -> float | None:
    """First value of numeric `keyword` (see `_functional`), None if absent. A stated NaN
    or Inf raises: taken as absent, a NaN RescaleSlope would silently become 1."""
    value = _functional(ds, keyword)
    if value is None:
        return None
    number = float(value[0] if isinstance(value, MultiValue) else value)
    if not math.isfinite(number):
        raise FormatError(path, f"{keyword} is {number}")
    return number


def _decode(ds: pydicom.Dataset, path: str) -> tuple[np.ndarray, str]:
    """All frames as decoded by pydicom and the photometric interpretation they came out in."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise FormatError(path, "no transfer syntax in the file meta information")
    frames = int(ds.get("NumberOfFrames") or 1)
    expected = ds.Rows * ds.Columns * frames * ds.SamplesPerPixel
    if expected > MAX_PIXEL_VALUES:
        raise FormatError(
            path,
            f"{ds.Rows} x {ds.Columns} pixels x {frames} frames x {ds.SamplesPerPixel} samples "
            f"is over the budget of {MAX_PIXEL_VALUES} values",
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as e:
        raise FormatError(path, f"unsupported transfer syntax {syntax.name}") from e
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise FormatError(path, f"no decoder installed for {syntax.name} ({missing})")
    try:
        array, meta = decoder.as_array(ds)
    except Exception as e:
        raise FormatError.caused_by(path, "cannot decode pixel data", e) from e
    if array.size != expected:
        raise FormatError(path, f"decoded {array.size} pixel values, header says {expected}")
    return array, str(meta["photometric_interpretation"])


def _pixel_item(ds: pydicom.Dataset, path: str) -> DicomItem:
    array, photometric = _decode(ds, path)
    samples = ds.SamplesPerPixel
    if photometric in MONOCHROME and samples == 1:
        pixels = _modality_values(ds, array, path)
        center, width = _window(ds, pixels, path)
    elif photometric == "PALETTE COLOR" and samples == 1:
        colours = apply_color_lut(array, ds)  # uint8 or uint16, as the palette's entries
        pixels, photometric = colours.astype(np.float32), "RGB"
        center, width = convert.window_spanning(0, np.iinfo(colours.dtype).max)
    elif photometric in RGB_PHOTOMETRICS and samples == 3:
        pixels, photometric = array.astype(np.float32), "RGB"
        center, width = convert.window_spanning(0, 2**ds.BitsStored - 1)
    else:
        raise FormatError(
            path,
            f"unsupported photometric interpretation {photometric} "
            f"with {samples} samples per pixel",
        )
    if int(ds.get("NumberOfFrames") or 1) == 1:
        return DicomItem(
            "image",
            pixels=pixels,
            window_center=center,
            window_width=width,
            photometric=photometric,
        )
    frames = np.stack(  # a frame at a time, so the float64 windowing stays one frame big
        [np.round(_display01(f, center, width, photometric) * 255).astype(np.uint8) for f in pixels]
    )
    return DicomItem(
        "video", frames=frames if frames.ndim == 4 else frames[..., None], fps=_fps(ds, path)
    )


def _modality_values(ds: pydicom.Dataset, array: np.ndarray, path: str) -> np.ndarray:
    """Stored values -> modality units (HU for CT): the rescale, or a modality LUT."""
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(array, ds).astype(np.float32)
    slope = _number(ds, "RescaleSlope", path)
    intercept = _number(ds, "RescaleIntercept", path)
    with np.errstate(over="ignore"):  # counted below
        values = array.astype(np.float64) * (1.0 if slope is None else slope)
        values = (values + (intercept or 0.0)).astype(np.float32)
    overflowed = values.size - np.count_nonzero(np.isfinite(values))
    if overflowed:
        raise FormatError(
            path,
            f"RescaleSlope {slope} and RescaleIntercept {intercept} overflow float32 "
            f"on {overflowed} of {values.size} pixels",
        )
    return values


def _window(ds: pydicom.Dataset, pixels: np.ndarray, path: str) -> tuple[float, float]:
    """The file's first window, else one spanning the central 99% of values."""
    center = _number(ds, "WindowCenter", path)
    width = _number(ds, "WindowWidth", path)
    if center is not None and width is not None and width >= 1:
        return center, width
    return convert.window_spanning(*np.percentile(pixels, WINDOW_PERCENTILES))


def _display01(pixels: np.ndarray, center: float, width: float, photometric: str) -> np.ndarray:
    display = convert.window(pixels, center, width)
    return 1.0 - display if photometric == "MONOCHROME1" else display


def _fps(ds: pydicom.Dataset, path: str) -> float | None:
    """Frames per second from the first stated of Frame Time (ms), Cine Rate and
    Recommended Display Frame Rate; None if none is."""
    frame_time = _number(ds, "FrameTime", path)
    if frame_time is not None:
        rate = 1000.0 / frame_time if frame_time else math.inf
        return convert.check_rate(
            path, rate, convert.FRAME_RATE_FPS, f"frame rate (FrameTime {frame_time} ms)"
        )
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _number(ds, keyword, path)
        if rate is not None:
            return convert.check_rate(path, rate, convert.FRAME_RATE_FPS, keyword)
    return None


def _waveform_item(ds: pydicom.Dataset, path: str) -> DicomItem:
    """The longest multiplex group (the rhythm strip, not the median beat), in millivolts."""
    groups = ds.WaveformSequence
    if not groups:
        raise FormatError(path, "empty waveform sequence")
    rates = [_waveform_rate(group, index, path) for index, group in enumerate(groups)]
    durations = [
        (g.get("NumberOfWaveformSamples") or 0) / (rate or math.inf)
        for g, rate in zip(groups, rates, strict=True)
    ]
    index = int(np.argmax(durations))
    group, rate = groups[index], rates[index]
    if rate is None:
        raise FormatError(path, f"waveform group {index}: no sampling frequency")
    channels = group.get("ChannelDefinitionSequence") or []
    samples, count = group.get("NumberOfWaveformSamples"), group.get("NumberOfWaveformChannels")
    if not samples or count != len(channels):
        raise FormatError(
            path, f"waveform group {index}: {count} channels, {len(channels)} defined"
        )
    expected = samples * count * (group.get("WaveformBitsAllocated") or 0) // 8
    if len(group.get("WaveformData") or b"") < expected:
        raise FormatError(path, f"waveform group {index}: data shorter than {expected} bytes")
    units = [_channel_units(channel) for channel in channels]
    signal, kept = convert.millivolt_channels(ds.waveform_array(index), units, path)
    if not kept:
        raise FormatError(path, f"waveform group {index}: no channel in volts (units {units})")
    labels = [_channel_label(channels[column], column) for column in kept]
    return DicomItem(
        "signal",
        signal=signal,
        rate_hz=rate,
        lead_names=tuple(convert.lead_name(label) or label for label in labels),
    )


def _waveform_rate(group: pydicom.Dataset, index: int, path: str) -> float | None:
    """Every group's rate is checked: a damaged one would otherwise only lose the choice of
    the longest group, and the median beat would pass for the rhythm strip."""
    rate = _number(group, "SamplingFrequency", path)
    if rate is None:
        return None
    what = f"waveform group {index}: SamplingFrequency (Hz)"
    return convert.check_rate(path, rate, convert.SIGNAL_RATE_HZ, what)


def _channel_units(channel: pydicom.Dataset) -> str:
    """UCUM unit of a channel's sensitivity; empty when the scale is unknown."""
    units = channel.get("ChannelSensitivityUnitsSequence")
    if "ChannelSensitivity" not in channel or not units:
        return ""
    return str(units[0].get("CodeValue", ""))


def _channel_label(channel: pydicom.Dataset, column: int) -> str:
    source = channel.get("ChannelSourceSequence")
    if source and source[0].get("CodeMeaning"):
        return str(source[0].CodeMeaning)
    return str(channel.get("ChannelLabel") or f"channel {column}")


def _report_item(ds: pydicom.Dataset, path: str) -> DicomItem:
    lines = _report_lines(ds.ContentSequence)
    if not lines:
        raise FormatError(path, "structured report without text, code or numeric content")
    return DicomItem("report", text="\n".join(lines))


def _report_lines(items) -> list[str]:
    """Text values as written, section names as headings, codes and measurements as
    "Name: value" lines, in document order."""
    lines = []
    for item in items:
        if item.get("RelationshipType") in SR_SKIPPED_RELATIONSHIPS:
            continue
        name = _code_meaning(item.get("ConceptNameCodeSequence"))
        kind = item.get("ValueType")
        if kind == "TEXT":
            text = str(item.get("TextValue") or "")
            lines += [line.strip() for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
        elif kind == "CONTAINER" and name:
            lines.append(name)
        elif kind == "CODE":
            lines.append(_named(name, _code_meaning(item.get("ConceptCodeSequence"))))
        elif kind == "NUM" and item.get("MeasuredValueSequence"):
            measured = item.MeasuredValueSequence[0]
            unit = _code_value(measured.get("MeasurementUnitsCodeSequence"))
            lines.append(_named(name, f"{measured.get('NumericValue', '')} {unit}".strip()))
        lines += _report_lines(item.get("ContentSequence") or [])
    return [line for line in lines if line]


def _code_meaning(sequence) -> str:
    return str(sequence[0].get("CodeMeaning") or "") if sequence else ""


def _code_value(sequence) -> str:
    return str(sequence[0].get("CodeValue") or "") if sequence else ""


def _named(name: str, value: str) -> str:
    if not value:
        return ""
    return f"{name}: {value}" if name else value
