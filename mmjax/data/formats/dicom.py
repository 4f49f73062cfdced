"""DICOM files -> image, video, ECG signal or report, by what the file holds.

pydicom parses element values lazily, so a corrupt value can surface long after
`dcmread` returned; everything that touches the dataset runs under one guard that
turns parser errors into `FormatError`. Numbers the output depends on are checked, not
guessed at: a stated NaN or Inf (rescale, window, rates) names its tag, a rescale that
overflows and rates outside `convert`'s plausible ranges are errors, and the pixel counts
the header promises are held to `MAX_PIXEL_VALUES` (an image) or `MAX_KEPT_FRAME_VALUES`
(the frames kept) before anything is decoded. Pixel data is decoded from the file a frame
at a time, and only the frames kept, so memory follows what is kept, not the file's size.
"""

import dataclasses
import math
import os
import re
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    as_pixel_options,
    get_decoder,
)
from pydicom.pixels.decoders.base import DecodeRunner

from mmjax.data.formats import FormatError, convert, existing_file

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Decoders hand back RGB for these: pydicom converts YBR_FULL(_422), JPEG 2000 codecs undo
# their own colour transform (ICT, RCT).
RGB_PHOTOMETRICS = ("RGB", "YBR_ICT", "YBR_RCT")
WINDOW_PERCENTILES = (0.5, 99.5)  # display range when the file gives no window
# What pydicom's VOI functions read: the VOI LUT module, and the stored range and rescale
# that set a window's output range.
VOI_KEYWORDS = ("PhotometricInterpretation", "BitsStored", "PixelRepresentation",
                "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction",
                "VOILUTSequence")
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
# Observation and acquisition context is who/when/how (and may name people), not findings.
SR_SKIPPED_RELATIONSHIPS = ("HAS OBS CONTEXT", "HAS ACQ CONTEXT")
# Decoded values a file may make us keep: a few bytes of header can promise terabytes,
# which decoders allocate up front. Measured by tools/bench_ingest_memory.py, ingest's peak
# RSS stays under 1 GB at either budget: ~210 MiB of imports, then ~16 bytes a value of an
# image (modality values, display, resize copies) and ~8.5 of kept frames (float32 values,
# their percentile copy, the uint8 video).
MAX_PIXEL_VALUES = 2**25  # a single-frame image: 5792 x 5792 grey, 3344 x 3344 RGB
# The frames kept of a multi-frame file together: ingest's 16 of 2048 x 2048 grey or
# 1182 x 1182 RGB.
MAX_KEPT_FRAME_VALUES = 2**26
# Values larger than this are deferred by dcmread: pixel data stays in the file.
DEFER_BYTES = 2**20
# The rescale and window run in float64 over blocks of about this many values.
BLOCK_VALUES = 2**20


@dataclasses.dataclass(frozen=True, eq=False)
class DicomItem:
    """What one DICOM file holds; only the fields of its `kind` are set."""

    kind: str
    pixels: np.ndarray | None = None  # image: float32 [H, W] modality values (HU), or [H, W, 3]
    window_center: float | None = None
    window_width: float | None = None
    photometric: str | None = None  # after decoding: MONOCHROME1, MONOCHROME2 or RGB
    # A VOI LUT or a SIGMOID / LINEAR_EXACT window, which pydicom applies for display01;
    # None: the linear window above
    voi: pydicom.Dataset | None = None
    frames: np.ndarray | None = None  # video: uint8 [T, H, W, C], windowed for display
    fps: float | None = None
    signal: np.ndarray | None = None  # signal: float32 [N, L] millivolts
    rate_hz: float | None = None
    lead_names: tuple[str, ...] = ()  # schema names where recognised, else the file's label
    text: str | None = None  # report

    def display01(self) -> np.ndarray:
        """The image windowed to [0, 1], bright meaning dense (MONOCHROME1 inverted)."""
        return _by_blocks(
            lambda block: _display01(block, self.window_center, self.window_width,
                                     self.photometric, self.voi),
            self.pixels, np.empty(self.pixels.shape, np.float32),
        )


def read_dicom(path, frames: int | None = None) -> DicomItem:
    """What the file holds; of a multi-frame file only `frames` (None: all), sampled
    uniformly as videos are (`convert.frame_indices`), are decoded."""
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    path = existing_file(path)
    try:
        ds = pydicom.dcmread(path, force=False, defer_size=DEFER_BYTES)
    except InvalidDicomError as e:
        raise FormatError(path, f"not a DICOM file ({e})") from e
    except Exception as e:
        raise FormatError.caused_by(path, "unreadable DICOM", e) from e
    try:
        return _item(ds, path, frames)
    except FormatError:
        raise
    except Exception as e:
        raise FormatError.caused_by(path, "corrupt DICOM", e) from e


def _item(ds: pydicom.Dataset, path: str, frames: int | None) -> DicomItem:
    if any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return _pixel_item(ds, path, frames)
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


def _kept_frames(ds: pydicom.Dataset, path: str, frames: int | None) -> np.ndarray:
    """Indices of the frames to decode, once the header's sizes are within budget."""
    count = int(ds.get("NumberOfFrames") or 1)
    if count < 1:
        raise FormatError(path, f"NumberOfFrames is {count}")
    kept = count if frames is None else min(count, frames)
    budget = MAX_PIXEL_VALUES if count == 1 else MAX_KEPT_FRAME_VALUES
    if ds.Rows * ds.Columns * ds.SamplesPerPixel * kept > budget:
        raise FormatError(
            path,
            f"{ds.Rows} x {ds.Columns} pixels x {kept} frames x {ds.SamplesPerPixel} samples "
            f"is over the budget of {budget} values",
        )
    return convert.frame_indices(count, kept)


def _decode(
    ds: pydicom.Dataset, path: str, indices: np.ndarray
) -> Iterator[tuple[np.ndarray, str]]:
    """Each frame at `indices` as decoded by pydicom, with the photometric interpretation it
    came out in. Frames are read from the file, so the (deferred) pixel data is never
    loaded whole."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise FormatError(path, "no transfer syntax in the file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as e:
        raise FormatError(path, f"unsupported transfer syntax {syntax.name}") from e
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise FormatError(path, f"no decoder installed for {syntax.name} ({missing})")
    keyword = next(keyword for keyword in PIXEL_KEYWORDS if keyword in ds)
    element = ds.get_item(keyword, keep_deferred=True)  # raw: where the value starts
    options = as_pixel_options(
        ds, transfer_syntax_uid=syntax, pixel_keyword=keyword, pixel_vr=element.VR
    )
    # Offsets of a deflated file are in the inflated stream, which pydicom holds anyway:
    # decode from the dataset, whose length pydicom checks.
    in_file = not syntax.is_deflated
    if in_file and not syntax.is_encapsulated:  # read from a file, pydicom checks no length
        runner = DecodeRunner(syntax)
        runner.set_options(**options)
        expected = math.ceil(runner.frame_length(unit="bytes") * options["number_of_frames"])
        held = min(element.length, os.path.getsize(path) - element.value_tell)
        if held < expected:
            raise FormatError(path, f"pixel data holds {held} bytes, header says {expected}")
    values = ds.Rows * ds.Columns * ds.SamplesPerPixel
    with open(path, "rb") as file:
        for index in indices:
            file.seek(element.value_tell)
            try:
                array, meta = decoder.as_array(file if in_file else ds, index=int(index),
                                               **options)
            except Exception as e:
                raise FormatError.caused_by(path, "cannot decode pixel data", e) from e
            if array.size != values:
                raise FormatError(
                    path, f"decoded {array.size} pixel values a frame, header says {values}"
                )
            yield array, str(meta["photometric_interpretation"])


def _pixel_item(ds: pydicom.Dataset, path: str, frames: int | None) -> DicomItem:
    indices = _kept_frames(ds, path, frames)
    samples, pixels = ds.SamplesPerPixel, None
    for k, (array, photometric) in enumerate(_decode(ds, path, indices)):
        grey = photometric in MONOCHROME and samples == 1
        palette = photometric == "PALETTE COLOR" and samples == 1
        if not (grey or palette or (photometric in RGB_PHOTOMETRICS and samples == 3)):
            raise FormatError(
                path,
                f"unsupported photometric interpretation {photometric} "
                f"with {samples} samples per pixel",
            )
        if pixels is None:  # filled in place: no second copy of what is kept
            shape = (*array.shape, 3) if palette else array.shape
            pixels = np.empty((len(indices), *shape), np.float32)
        if grey:
            _modality_values(ds, array, path, out=pixels[k])
        elif palette:
            colours = apply_color_lut(array, ds)  # uint8 or uint16, as the palette's entries
            pixels[k] = colours
        else:
            pixels[k] = array
    voi = None
    if grey:
        center, width = _window(ds, pixels, path)
        voi = _voi(ds, path)
    else:
        top = np.iinfo(colours.dtype).max if palette else 2**ds.BitsStored - 1
        photometric, (center, width) = "RGB", convert.window_spanning(0, top)
    if int(ds.get("NumberOfFrames") or 1) == 1:
        return DicomItem(
            "image",
            pixels=pixels[0],
            window_center=center,
            window_width=width,
            photometric=photometric,
            voi=voi,
        )
    video = np.empty(pixels.shape, np.uint8)
    for frame, out in zip(pixels, video, strict=True):
        _by_blocks(
            lambda block: np.round(_display01(block, center, width, photometric, voi) * 255),
            frame, out)
    return DicomItem(
        "video", frames=video if video.ndim == 4 else video[..., None], fps=_fps(ds, path)
    )


def _by_blocks(function, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out[...] = function(values)` a block of rows at a time, so float64 temporaries stay
    about BLOCK_VALUES big instead of 8 to 24 bytes a value of the whole image."""
    rows = max(1, BLOCK_VALUES * len(values) // max(1, values.size))
    for start in range(0, len(values), rows):
        out[start : start + rows] = function(values[start : start + rows])
    return out


def _modality_values(
    ds: pydicom.Dataset, array: np.ndarray, path: str, out: np.ndarray
) -> np.ndarray:
    """Stored values -> modality units (HU for CT) in `out`: the rescale, or a modality LUT."""
    if "ModalityLUTSequence" in ds:
        out[...] = apply_modality_lut(array, ds)
        return out
    slope = _number(ds, "RescaleSlope", path)
    intercept = _number(ds, "RescaleIntercept", path)
    scale, offset = 1.0 if slope is None else slope, intercept or 0.0
    with np.errstate(over="ignore"):  # counted below
        _by_blocks(lambda block: block.astype(np.float64) * scale + offset, array, out)
    overflowed = out.size - np.count_nonzero(np.isfinite(out))
    if overflowed:
        raise FormatError(
            path,
            f"RescaleSlope {slope} and RescaleIntercept {intercept} overflow float32 "
            f"on {overflowed} of {out.size} pixels",
        )
    return out


def _window(ds: pydicom.Dataset, pixels: np.ndarray, path: str) -> tuple[float, float]:
    """The file's first window, else one spanning the central 99% of values."""
    center = _number(ds, "WindowCenter", path)
    width = _number(ds, "WindowWidth", path)
    if center is not None and width is not None and width >= 1:
        return center, width
    return convert.window_spanning(*np.percentile(pixels, WINDOW_PERCENTILES))


def _voi(ds: pydicom.Dataset, path: str) -> pydicom.Dataset | None:
    """The VOI elements for pydicom when a linear window cannot say what the file asks
    (a VOI LUT Sequence, or a window with VOILUTFunction SIGMOID or LINEAR_EXACT), else None.
    The rescale goes in as `_number` reads it (functional groups too): it shifts a window's
    output range. A function pydicom does not know, or a LUT it cannot apply, is refused."""
    function = str(_functional(ds, "VOILUTFunction") or "LINEAR").upper()
    has_window = _number(ds, "WindowWidth", path) is not None
    if "VOILUTSequence" not in ds and (function == "LINEAR" or not has_window):
        return None
    voi = pydicom.Dataset()
    # A LUT's OW data is read in the file's byte order.
    if "TransferSyntaxUID" in ds.get("file_meta", ()):
        voi.file_meta = ds.file_meta
    else:
        voi.set_original_encoding(*ds.original_encoding)
    for keyword in VOI_KEYWORDS:
        value = _functional(ds, keyword)
        if value is not None:
            setattr(voi, keyword, value)
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        number = _number(ds, keyword, path)
        if number is not None:
            setattr(voi, keyword, number)
    try:
        _voi01(np.zeros(1), voi)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError) as e:
        raise FormatError.caused_by(path, "VOI LUT that cannot be applied", e) from e
    return voi


def _voi01(pixels: np.ndarray, voi: pydicom.Dataset) -> np.ndarray:
    """pydicom's VOI LUT or else window (pydicom's preference), rescaled from its
    output range to [0, 1]: a LUT's range is its bit depth, a window's the extreme outputs
    (the stored range, rescaled), which it gives for -inf and +inf."""
    if "VOILUTSequence" in voi:  # a table indexed by integer values
        display = apply_voi_lut(np.rint(pixels).astype(np.int64), voi, index=0)
        low, high = 0.0, 2.0 ** int(voi.VOILUTSequence[0].LUTDescriptor[2]) - 1
    else:
        display = apply_voi_lut(pixels, voi, index=0)
        with np.errstate(over="ignore"):
            low, high = apply_voi_lut(np.array([-np.inf, np.inf]), voi, index=0)
    return np.clip((display.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _display01(pixels: np.ndarray, center: float, width: float, photometric: str,
               voi: pydicom.Dataset | None = None) -> np.ndarray:
    display = convert.window(pixels, center, width) if voi is None else _voi01(pixels, voi)
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
