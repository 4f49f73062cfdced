"""Audio (WAV, FLAC, OGG, MP3, ...) and the audio track of videos -> mono float32, with PyAV.

Every sample format FFmpeg decodes to (integer or float, planar or packed) becomes
float32 in [-1, 1], and channels are averaged to one. A stream that fails to decode
part-way raises, as for video. FFmpeg reads a cut WAV as a short one without
complaint, so WAV files are also checked against the data size their header
declares; a cut MP3 declares no reliable length and is not detected.

Hostile files are refused before they cost memory or poison a dataset: a rate outside
`convert.AUDIO_RATE_HZ`, a declared length over `MAX_AUDIO_SAMPLES` (checked from the
header before decoding, and again while decoding, for headers that understate), and
float samples that are NaN, Inf or beyond float16, counted.
"""

import dataclasses
import os

import av
import numpy as np

from mmjax.data.formats import FormatError, convert, existing_file

RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes that streaming recorders leave unset
# Samples per channel one file may decode to: 512 MB of float32 mono, twice that while the
# chunks are joined; 46 minutes at 48 kHz, 4.6 hours at 8 kHz.
MAX_AUDIO_SAMPLES = 2**27


@dataclasses.dataclass(frozen=True, eq=False)
class AudioItem:
    samples: np.ndarray  # float32 [N] mono in [-1, 1]
    rate_hz: float


def read_audio(path, rate_hz: float | None = None) -> AudioItem | None:
    """The first audio stream, mono, resampled to `rate_hz` (None keeps the file's rate).

    None when the file holds a video stream and no audio stream (a silent video: its
    audio is absent, not bad); a file with neither raises.
    """
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    path = existing_file(path)
    _check_wav_length(path)
    decoded = _decode(path)
    if decoded is None:
        return None
    chunks, file_rate = decoded
    if not sum(map(len, chunks)):
        raise FormatError(path, "no audio samples decoded")
    samples = np.concatenate(chunks)
    if rate_hz is not None and rate_hz != file_rate:
        samples = convert.resample_signal(
            samples[:, None], file_rate, rate_hz, len(samples) / file_rate
        )[:, 0]
    return AudioItem(samples, float(rate_hz or file_rate))


def fit_length(samples: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """float32 [length]: a centre crop or zero padding at the end, and how many samples are
    real, so a batch of clips can mask its padding."""
    samples = np.asarray(samples, np.float32)
    start = max((len(samples) - length) // 2, 0)
    kept = samples[start : start + length]
    out = np.zeros(length, np.float32)
    out[: len(kept)] = kept
    return out, len(kept)


def _decode(path: str) -> tuple[list[np.ndarray], int] | None:
    """Mono float32 chunks of the first audio stream and its rate; None for a silent video."""
    chunks, rate, decoded = [], None, 0
    unusable, values = np.zeros(2, np.int64), 0  # counted over every channel
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                if container.streams.video:
                    return None
                raise FormatError(path, "no audio or video stream")
            stream = container.streams.audio[0]
            _check_declared_length(path, container, stream)
            for frame in container.decode(stream):
                if rate is None:
                    rate = convert.check_rate(path, frame.sample_rate, convert.AUDIO_RATE_HZ,
                                              "sample rate (Hz)")
                elif frame.sample_rate != rate:
                    raise FormatError(path, f"rate changes, {rate} -> {frame.sample_rate} Hz")
                decoded += frame.samples
                if decoded > MAX_AUDIO_SAMPLES:
                    raise FormatError(
                        path,
                        f"decodes past the budget of {MAX_AUDIO_SAMPLES} samples "
                        f"({MAX_AUDIO_SAMPLES / rate:.0f} s at {rate:g} Hz)",
                    )
                array = _channels(frame)
                if array.dtype.kind == "f":
                    unusable += convert.unusable_samples(array)
                values += array.size
                chunks.append(_mono_float(array))
    except FormatError:
        raise
    except Exception as e:  # FFmpeg errors on cut or damaged streams
        seconds = decoded / rate if rate else 0
        what = f"corrupt audio after {seconds:.2f} s" if chunks else "unreadable audio"
        raise FormatError.caused_by(path, what, e) from e
    convert.check_counts(path, unusable, values, "samples")
    return chunks, rate


def _check_declared_length(path: str, container, stream: av.AudioStream):
    """Refuse, before decoding, a stream whose header says it is longer than the budget."""
    if stream.duration is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return
    samples = seconds * stream.sample_rate
    if samples > MAX_AUDIO_SAMPLES:
        raise FormatError(
            path,
            f"declares {seconds:.0f} s at {stream.sample_rate} Hz, {samples:.0f} samples: over "
            f"the budget of {MAX_AUDIO_SAMPLES}",
        )


def _channels(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples], whether the frame is planar or packed."""
    array = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: [1, samples * channels], interleaved
        array = array.reshape(-1, frame.layout.nb_channels).T
    return array


def _mono_float(array: np.ndarray) -> np.ndarray:
    """float32 [samples]: the mean of the [channels, samples], each scaled to [-1, 1].

    Floats are clipped, as lossy decoders overshoot full scale slightly; integers
    are divided by their full scale, unsigned ones centred first.
    """
    if array.dtype.kind == "f":
        return np.clip(array.mean(0, dtype=np.float32), -1, 1)
    full_scale = 2.0 ** (8 * array.dtype.itemsize - 1)
    offset = full_scale if array.dtype.kind == "u" else 0
    return ((array.mean(0, dtype=np.float64) - offset) / full_scale).astype(np.float32)


def _check_wav_length(path: str):
    """Raise if a RIFF/WAVE file's data chunk promises more bytes than the file holds."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        while len(chunk := f.read(8)) == 8:
            length = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                held = size - f.tell()
                if length not in RIFF_UNKNOWN_SIZES and length > held:
                    raise FormatError(path, f"truncated: {held} of {length} bytes of samples")
                return
            f.seek(length + length % 2, os.SEEK_CUR)  # chunks are padded to even sizes
