"""Hostile and odd numbers in the readers' inputs (issue 17): each ends in a FormatError
naming the file and the tag, rate or count at fault, or in values checked against the
formula worked out here from the raw stored numbers — never NaN pixels, a silently
ignored tag, or gigabytes allocated for a small file. Tiny files, generated per test."""

import json
import re
import struct
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
import wfdb
from conftest import write_av
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from mmjax.data import ingest
from mmjax.data.formats import FormatError, audio, convert, dicom, video
from mmjax.data.formats.audio import read_audio
from mmjax.data.formats.dicom import read_dicom
from mmjax.data.formats.ecg import read_ecg
from mmjax.data.formats.video import read_video

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# 12 bits stored in 16: the top nibble (0xF000, overlay bits in old scanners) is not the value.
RAW_CT = np.array([[0, 345, 346, 420], [0xF000 | 420, 505, 506, 4095]], np.uint16)


def _raises(match: str, path):
    """FormatError whose message names `path` and matches `match`."""
    return pytest.raises(FormatError, match=rf"^{re.escape(str(path))}: .*{match}")


def _ct(path, raw=RAW_CT, signed=False, frames=1, **tags):
    """A CT image stored as 12 of 16 bits, with `tags` (keyword: value) set on top."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CT", "MONOCHROME2", 1
    ds.Rows, ds.Columns = raw.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(raw, "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --- DICOM: the modality LUT and the window, against the formula ------------------------------


@pytest.mark.parametrize("signed", [False, True])
def test_rescale_window_and_monochrome1_equal_the_formula(tmp_path, signed):
    path = _ct(tmp_path / "ct.dcm", signed=signed, PhotometricInterpretation="MONOCHROME1",
               RescaleSlope="2.5", RescaleIntercept="-1024", WindowCenter="40",
               WindowWidth="400")
    stored = (RAW_CT & 0x0FFF).astype(np.int64)  # the 12 stored bits
    if signed:  # two's complement in 12 bits: 0xFFF is -1
        stored = np.where(stored >= 0x800, stored - 0x1000, stored)
    hu = stored * 2.5 - 1024
    item = read_dicom(path)
    np.testing.assert_array_equal(item.pixels, hu)
    assert not np.array_equal(item.pixels, stored - 1024)  # a slope ignored would differ
    assert not np.array_equal(item.pixels, stored * 2.5)  # and so would the intercept
    assert (item.window_center, item.window_width, item.photometric) == (40, 400, "MONOCHROME1")
    linear = np.clip((hu - (40 - 0.5)) / (400 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(item.display01(), 1 - linear, atol=1e-6)  # MONOCHROME1: inverted
    assert 0 < linear[0, 2] < linear[1, 0] < linear[1, 1] < 1  # values inside the window, too


@pytest.mark.parametrize(
    "tags, match",
    [
        ({"RescaleSlope": "NaN"}, "RescaleSlope is nan"),
        ({"RescaleIntercept": "-inf"}, "RescaleIntercept is -inf"),
        ({"RescaleSlope": "1e308"}, "RescaleSlope 1e\\+308 .* overflow float32 on 7 of 8 pixels"),
        ({"RescaleSlope": "8e35"}, "overflow float32 on 3 of 8"),  # finite in float64, not 32
        ({"WindowCenter": "NaN", "WindowWidth": "400"}, "WindowCenter is nan"),
        ({"WindowCenter": "40", "WindowWidth": "inf"}, "WindowWidth is inf"),
    ],
)
def test_non_finite_rescale_or_window_names_the_tag(tmp_path, tags, match):
    path = _ct(tmp_path / "ct.dcm", **tags)
    with _raises(match, path):
        read_dicom(path)


def _header(path, rows: int, columns: int, frames: int = 1):
    """A CT file whose header promises `rows` x `columns` x `frames`, holding 2 x 2 values."""
    _ct(path, raw=np.zeros((2, 2), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    "rows, frames, wanted, match",
    [
        (65535, 1000, None, "65535 x 65535 pixels x 1000 frames x 1 samples is over the budget "
                            "of 67108864"),
        (8000, 1, None, "8000 x 8000 pixels x 1 frames x 1 samples is over the budget of 33554432"),
        (2048, 10**6, 17, "2048 x 2048 pixels x 17 frames x 1 samples is over the budget of 6710"),
        (2048, 10**6, None, "x 1000000 frames x 1 samples is over the budget"),
    ],
)
def test_pixel_budget_is_checked_before_decoding(tmp_path, monkeypatch, rows, frames, wanted,
                                                 match):
    """A few bytes promising more values than kept frames or an image may hold are refused
    without a decoder: an image holds MAX_PIXEL_VALUES, the frames kept together
    MAX_KEPT_FRAME_VALUES (ingest's 16 of 2048 x 2048, not 17)."""
    path = _header(tmp_path / "huge.dcm", rows, rows, frames)

    def no_decoding(syntax):
        raise AssertionError("decoder asked for")

    monkeypatch.setattr(dicom, "get_decoder", no_decoding)
    with _raises(match, path):
        read_dicom(path, wanted)


def test_frames_within_budget_but_missing_from_the_file_are_refused(tmp_path):
    """16 of a million promised 2048 x 2048 frames are within budget; the file holds 8 bytes,
    which the header's frame count is checked against before any frame is read."""
    path = _header(tmp_path / "short.dcm", 2048, 2048, 10**6)
    with _raises(f"pixel data holds 8 bytes, header says {2048 * 2048 * 2 * 10**6}", path):
        read_dicom(path, 16)


@pytest.mark.parametrize(
    "tags, match",
    [
        ({"FrameTime": "0"}, r"frame rate \(FrameTime 0.0 ms\) inf"),
        ({"FrameTime": "1e-9"}, r"FrameTime 1e-09 ms\) 9{12}\.9+ is outside"),
        ({"FrameTime": "-33"}, "is outside"),
        ({"FrameTime": "NaN"}, "FrameTime is nan"),
        ({"CineRate": "0"}, "CineRate 0.0 is outside"),
    ],
)
def test_absurd_dicom_frame_rate(tmp_path, tags, match):
    path = _ct(tmp_path / "cine.dcm", raw=np.zeros((3, 2, 2), np.uint16), frames=3, **tags)
    with _raises(match, path):
        read_dicom(path)
    ok = _ct(tmp_path / "ok.dcm", raw=np.zeros((3, 2, 2), np.uint16), frames=3, FrameTime="40")
    assert read_dicom(ok).fps == 25.0


def _cine(path, frames: int, size: int = 2):
    """Grey multi-frame CT, frame t offset by 100 t, with a window (not from percentiles)."""
    raw = (np.resize(RAW_CT, (size, size)) + 100 * np.arange(frames)[:, None, None]) & 0xFFFF
    return _ct(path, raw=raw.astype(np.uint16), frames=frames, WindowCenter="1000",
               WindowWidth="4000", RescaleIntercept="-1024")


@pytest.mark.parametrize("name", ["cine", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"])
def test_sampled_dicom_frames_are_decoded_alone_and_equal_the_whole_files(tmp_path, monkeypatch,
                                                                          name):
    """Native grey, JPEG (30 frames) and RLE (2 frames) RGB: only the uniformly sampled
    frames reach the decoder, each alone, and they are those of the whole file."""
    path = _cine(tmp_path / "cine.dcm", 30) if name == "cine" else get_testdata_file(name)
    everything = read_dicom(path).frames
    indices = convert.frame_indices(len(everything), min(len(everything), 16))
    asked = []
    decoder = dicom.get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    as_array = decoder.as_array
    monkeypatch.setattr(decoder, "as_array",
                        lambda src, index, **options: asked.append(index)
                        or as_array(src, index=index, **options))
    sampled = read_dicom(path, 16)
    assert asked == indices.tolist()
    np.testing.assert_array_equal(sampled.frames, everything[indices])
    assert len(read_dicom(path, 31).frames) == len(everything)


# --- DICOM waveforms --------------------------------------------------------------------------


def _waveform(tmp_path, group: int = 0, **tags):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    for keyword, value in tags.items():
        setattr(ds.WaveformSequence[group], keyword, value)
    path = tmp_path / "ecg.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("rate", ["1e12", "0", "-500", "NaN"])
@pytest.mark.parametrize("group", [0, 1])  # 1: the median beat, which must not win by default
def test_absurd_waveform_sampling_frequency(tmp_path, rate, group):
    path = _waveform(tmp_path, group, SamplingFrequency=rate)
    match = "SamplingFrequency is nan" if rate == "NaN" else (
        f"waveform group {group}: SamplingFrequency \\(Hz\\) {float(rate)} is outside")
    with _raises(match, path):
        read_dicom(path)


def test_waveform_samples_overflowing_or_beyond_float16_are_counted(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    channels[0].ChannelSensitivity = "1e308"  # uV per unit: Inf wherever the raw value is not 0
    channels[1].ChannelSensitivity = "1e5"  # 0.1 V per unit: beyond 65504 mV from 656 units
    path = tmp_path / "ecg.dcm"
    ds.save_as(path)
    raw = np.frombuffer(ds.WaveformSequence[0].WaveformData, "<i2").reshape(-1, len(channels))
    corrections = [float(c.get("ChannelSensitivityCorrectionFactor", 1)) for c in channels[:2]]
    lead_ii = raw[:, 1] * 1e5 * corrections[1] / 1000  # in mV, as the reader scales it
    nonfinite, beyond = np.count_nonzero(raw[:, 0]), np.count_nonzero(np.abs(lead_ii) > 65504)
    assert nonfinite > 0 and beyond > 0
    with _raises(f"{nonfinite} non-finite and {beyond} out-of-range .* of {raw.size}", path):
        read_dicom(path)


# --- ECG files --------------------------------------------------------------------------------


def _npy_ecg(tmp_path, signal, **meta):
    np.save(tmp_path / "ecg.npy", np.asarray(signal))
    (tmp_path / "ecg.json").write_text(json.dumps({"rate_hz": 500, "leads": ["I", "II"], **meta}))
    return tmp_path / "ecg.npy"


@pytest.mark.parametrize("rate", [1e12, 0, -250, float("nan"), 10**400, 0.5])
def test_absurd_sidecar_rate(tmp_path, rate):
    path = _npy_ecg(tmp_path, np.zeros((100, 2)), rate_hz=rate)
    with _raises(f"sampling rate \\(Hz\\) {re.escape(str(rate))} is outside the plausible 1 to "
                 "100000", path):
        read_ecg(path)
    assert read_ecg(_npy_ecg(tmp_path, np.zeros((100, 2)), rate_hz=100000)).rate_hz == 100000


def test_absurd_wfdb_header_rate(tmp_path):
    wfdb.wrsamp("rec", fs=250, units=["mV"], sig_name=["II"], p_signal=np.zeros((50, 1)),
                fmt=["16"], write_dir=str(tmp_path))
    header = tmp_path / "rec.hea"
    header.write_text(header.read_text().replace("rec 1 250 50", "rec 1 1000000000000 50", 1))
    with _raises("sampling rate \\(Hz\\) 1000000000000 is outside", header):
        read_ecg(header)


def test_non_finite_and_huge_array_samples_are_counted_after_unit_conversion(tmp_path):
    signal = np.zeros((100, 2))
    signal[3, 0], signal[7, 1], signal[9, 1] = np.nan, np.inf, -np.inf
    signal[20, 0] = 7e7  # uV: 70000 mV, beyond float16
    signal[21, 0] = 6e7  # 60000 mV: fits
    path = _npy_ecg(tmp_path, signal, units="uV")
    with _raises("3 non-finite and 1 out-of-range \\(\\|x\\| > 65504\\) of 200 millivolt samples",
                 path):
        read_ecg(path)
    csv = tmp_path / "lead.csv"
    csv.write_text("II,V1\n0.1,0.2\n0.3,nan\n70000,0\n")
    with _raises("1 non-finite and 1 out-of-range", csv):
        read_ecg(csv, rate_hz=100)


def test_wfdb_missing_values_are_gaps_not_errors(tmp_path):
    """WFDB's missing value (NaN once read) marks gaps and unrecorded leads, not damage."""
    signal = np.stack([np.linspace(-1, 1, 50), np.full(50, np.nan), np.linspace(0, 2, 50)], 1)
    signal[10, 0] = np.nan
    wfdb.wrsamp("rec", fs=250, units=["mV"] * 3, sig_name=["I", "V1", "V2"], p_signal=signal,
                fmt=["16"] * 3, adc_gain=[1000.0] * 3, baseline=[0] * 3, write_dir=str(tmp_path))
    item = read_ecg(tmp_path / "rec.hea")
    assert item.lead_names == ("I", "V2")  # V1 was never recorded
    expected = np.where(np.isnan(signal[:, [0, 2]]), 0.0, signal[:, [0, 2]])
    np.testing.assert_allclose(item.signal, expected, atol=1e-3)
    assert item.signal[10, 0] == 0


# --- audio ------------------------------------------------------------------------------------


def _float_wav(path, channels: np.ndarray, rate: int):
    """IEEE float WAV (format tag 3) by hand, so NaN and Inf reach the file untouched."""
    data = np.ascontiguousarray(np.asarray(channels, "<f4").T).tobytes()
    count = len(channels)
    fmt = struct.pack("<HHIIHH", 3, count, rate, rate * 4 * count, 4 * count, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_float_wav_non_finite_and_huge_samples_are_counted(tmp_path):
    samples = np.zeros((2, 8000), np.float32)
    samples[0, 5], samples[1, 6], samples[1, 7] = np.nan, np.inf, -np.inf
    samples[0, 100], samples[:, 200] = 1e5, 1.5  # 1.5: lossy overshoot, clipped to 1
    path = _float_wav(tmp_path / "a.wav", samples, 8000)
    with _raises("3 non-finite and 1 out-of-range \\(\\|x\\| > 65504\\) of 16000 samples", path):
        read_audio(path)
    samples[:, :101] = 0
    item = read_audio(_float_wav(tmp_path / "ok.wav", samples, 8000))
    assert item.samples[200] == 1.0


@pytest.mark.parametrize("rate", [100, 3_000_000])
def test_absurd_audio_sample_rate(tmp_path, rate):
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.zeros(2000, "<i2").tobytes())
    with _raises(f"sample rate \\(Hz\\) {rate} is outside the plausible 1000 to 768000",
                 path):
        read_audio(path, 8000)


def test_long_audio_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "MAX_AUDIO_SAMPLES", 32000)  # 2 s at 16 kHz; the files: 3 s
    tone = [0.5 * np.sin(np.arange(48000) / 10)]
    flac = write_av(tmp_path / "a.flac", tone, "flac", 16000)
    mp4 = write_av(tmp_path / "a.mp4", tone, rate=16000, video_frames=30)

    def no_decoding(array):
        raise AssertionError("decoded")

    with monkeypatch.context() as patched:
        patched.setattr(audio, "_mono_float", no_decoding)
        for path in (flac, mp4):
            with _raises("declares 3 s at 16000 Hz, 48000 samples: over the budget of 32000",
                         path):
                read_audio(path, 2000)
    data = bytearray(flac.read_bytes())  # STREAMINFO: rate, channels, bits | 36-bit length
    header = int.from_bytes(data[18:26], "big")
    assert header & (2**36 - 1) == 48000
    data[18:26] = ((header >> 36 << 36) | 16000).to_bytes(8, "big")  # now claims 1 s
    (tmp_path / "lying.flac").write_bytes(bytes(data))
    with _raises("decodes past the budget of 32000 samples \\(2 s at 16000 Hz\\)",
                 tmp_path / "lying.flac"):
        read_audio(tmp_path / "lying.flac", 2000)


# --- video ------------------------------------------------------------------------------------


def _write_clip(path, frames: int, size=(32, 128), rate=10):
    """Frame t has a white bar at columns 4 (t mod 32) on black, so it names its index."""
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, 4 * (t % 32) : 4 * (t % 32) + 4] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _indices(frames: np.ndarray) -> list[int]:
    return [int(frame[..., 1].mean(0).argmax()) // 4 for frame in frames]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # .mkv states no frame count: packets
def test_sampled_frames_equal_uniform_sampling_of_the_whole_clip(tmp_path, suffix):
    path = _write_clip(tmp_path / f"clip{suffix}", 30)
    if suffix == ".mkv":
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == 0
    everything = read_video(path).frames
    assert _indices(everything) == list(range(30))
    sampled = read_video(path, 16)
    np.testing.assert_array_equal(sampled.frames, everything[convert.frame_indices(30, 16)])
    assert sampled.fps == 10.0 and len(read_video(path, 31).frames) == 30


@pytest.mark.parametrize("stated", [10, 50])
def test_a_wrong_stated_frame_count_is_corrected(tmp_path, monkeypatch, stated):
    path = _write_clip(tmp_path / "clip.mp4", 30)
    probe = video._probe
    monkeypatch.setattr(video, "_probe", lambda path, counted: (stated, probe(path, counted)[1]))
    assert _indices(read_video(path, 4).frames) == convert.frame_indices(30, 4).tolist()


def test_frame_size_and_rate_are_checked_before_decoding(tmp_path, monkeypatch):
    path = _write_clip(tmp_path / "clip.mp4", 3)
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 128 * 32 - 1)
    with _raises("frame size 128 x 32 is over the budget of 4095 pixels", path):
        read_video(path, 2)
    monkeypatch.undo()
    for rate, shown in ((Fraction(20000), "20000.0"), (Fraction(1, 2000), "0.0005")):
        fast = _write_clip(tmp_path / f"r{shown}.mp4", 3, rate=rate)
        with _raises(f"frame rate \\(fps\\) {shown} is outside the plausible 0.001 to 10000",
                     fast):
            read_video(fast, 2)


def _peak_rss_mib(statement: str) -> float:
    """Peak RSS (VmHWM: unlike ru_maxrss, not inherited from the forking test process) of a
    fresh process that imports the video and DICOM readers and runs `statement`."""
    code = ("from mmjax.data.formats.video import read_video\n"
            "from mmjax.data.formats.dicom import read_dicom\n"
            f"{statement}\n"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).parents[2])
    return int(done.stdout.split()[-1]) / 1024  # KiB


def test_long_clip_keeps_only_the_sampled_frames_in_memory(tmp_path):
    """300 frames of 256 x 256 are 56 MiB of RGB; ingest keeps 16 of them, 3 MiB. Peak RSS
    above the imports' is measured in fresh processes; keeping every frame is the control."""
    path = _write_clip(tmp_path / "long.mp4", 300, size=(256, 256), rate=30)
    imports = _peak_rss_mib("")
    every = _peak_rss_mib(f"read_video({str(path)!r})") - imports
    sampled = _peak_rss_mib(f"read_video({str(path)!r}, 16)") - imports
    assert every > 56 and sampled < 30, (every, sampled)


def test_multiframe_dicom_keeps_only_the_sampled_frames_in_memory(tmp_path):
    """100 frames of 512 x 512 are 50 MiB in the file and 100 MiB as float32; two sampled
    frames are 2 MiB, and the rest of the pixel data stays in the file."""
    path = _cine(tmp_path / "cine.dcm", 100, size=512)
    imports = _peak_rss_mib("")
    every = _peak_rss_mib(f"read_dicom({str(path)!r})") - imports
    sampled = _peak_rss_mib(f"read_dicom({str(path)!r}, 2)") - imports
    assert every > 100 and sampled < 20, (every, sampled)


# --- ingest: what resampling makes of samples near float16's limit ----------------------------


def test_resampling_overshoot_past_float16_is_refused_not_stored_as_inf(tmp_path):
    """A step from -65000 to 65000 mV passes the reader (|x| <= 65504) but the polyphase
    filter rings ~9% past it; stored as float16 that would be Inf."""
    signal = np.zeros((5000, 2), np.float32)
    signal[:2500], signal[2500:] = -65000, 65000
    path = tmp_path / "step.npy"
    np.save(path, signal)
    (tmp_path / "step.json").write_text(json.dumps({"rate_hz": 500, "leads": ["I", "II"]}))
    assert np.abs(read_ecg(path).signal).max() == 65000  # the reader lets it through
    overshoot = r"0 non-finite and [1-9]\d* out-of-range \(\|x\| > 65504\) of 12000 millivolt"
    with _raises(overshoot + " samples after resampling", path):  # 1000 samples x 12 leads
        ingest._file_item(path, ingest.Shapes())
    np.save(path, signal / 2)  # the same step at half the height is stored, finite
    stored = ingest._file_item(path, ingest.Shapes())["signal"]
    assert np.isfinite(stored).all() and np.abs(stored[:, :2]).max() > 32500


def test_deflated_dicom_decodes_from_the_inflated_dataset(tmp_path):
    """Pixel offsets of a deflated file point into the inflated stream, not the file."""
    path = _ct(tmp_path / "ct.dcm", RescaleIntercept="-1024")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(tmp_path / "deflated.dcm").pixels,
                                  read_dicom(path).pixels)
