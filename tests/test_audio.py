"""Audio: tones written here with PyAV and `wave` come back at the right pitch, level and
length from every codec; bad files raise FormatError; log-mel features match a scipy STFT."""

import contextlib
import functools
import wave
from pathlib import Path

import av
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from conftest import write_av
from hypothesis import given
from hypothesis import strategies as st

from mmjax.cli import main
from mmjax.data.formats import FormatError
from mmjax.data.formats.audio import AudioItem, fit_length, read_audio
from mmjax.data.pipeline import open_source
from mmjax.nn import melspec


def _tone(hz: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)


def _write_wav(path, channels, rate: int) -> Path:
    """16-bit PCM with the standard library, independently of FFmpeg."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(len(channels))
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.round(np.asarray(channels).T * 32767).astype("<i2").tobytes())
    return Path(path)


def _amplitude_at(samples: np.ndarray, rate: float, hz: float) -> float:
    """Amplitude of the `hz` component, from a Hann-windowed FFT (bins of rate/N Hz)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    near = np.abs(bins - hz) <= 2 * rate / len(samples)
    return float(spectrum[near].max())


def _peak_hz(samples: np.ndarray, rate: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def _skip_without_encoder(codec: str):
    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")


# --- reading ----------------------------------------------------------------------------------


def test_audio_track_of_a_video(tmp_path):
    clip = write_av(tmp_path / "clip.mp4", [_tone(440, 16000)], video_frames=10)
    item = read_audio(clip, 8000)
    assert isinstance(item, AudioItem) and item.rate_hz == 8000 and item.samples.dtype == np.float32
    assert abs(len(item.samples) - 8000) <= 512  # one AAC frame (1024 at 16 kHz) of padding
    assert _peak_hz(item.samples[:8000], 8000) == 440
    assert _amplitude_at(item.samples[:8000], 8000, 440) == pytest.approx(0.5, rel=0.05)
    assert read_audio(write_av(tmp_path / "silent.mp4", video_frames=10), 8000) is None


def test_stereo_wav_is_averaged_and_resampled(tmp_path):
    left, right = _tone(440, 22050, amplitude=0.6), _tone(1000, 22050, amplitude=0.2)
    path = _write_wav(tmp_path / "a.wav", [left, right], 22050)
    native = read_audio(path)
    assert native.rate_hz == 22050
    np.testing.assert_allclose(native.samples, (left + right) / 2, atol=1 / 32767)
    item = read_audio(path, 16000)
    assert item.rate_hz == 16000 and item.samples.shape == (16000,)
    assert _amplitude_at(item.samples, 16000, 440) == pytest.approx(0.3, rel=0.01)
    assert _amplitude_at(item.samples, 16000, 1000) == pytest.approx(0.1, rel=0.01)


@pytest.mark.parametrize(
    "name, codec, slack",  # slack: encoder padding allowed, in samples at 8 kHz
    [
        ("u8.wav", "pcm_u8", 0),
        ("s32.wav", "pcm_s32le", 0),
        ("f32.wav", "pcm_f32le", 0),
        ("f64.wav", "pcm_f64le", 0),
        ("a.flac", "flac", 0),
        ("a.m4a", "aac", 1024),
        ("a.ogg", "libopus", 400),
        ("a.mp3", "libmp3lame", 1152),
    ],
)
def test_sample_formats_and_codecs(tmp_path, name, codec, slack):
    _skip_without_encoder(codec)
    rate = 48000 if codec == "libopus" else 16000
    path = write_av(tmp_path / name, [_tone(440, rate), _tone(440, rate, amplitude=0.3)], codec,
                    rate)
    item = read_audio(path, 8000)
    assert abs(len(item.samples) - 8000) <= slack
    assert _peak_hz(item.samples[:8000], 8000) == 440
    assert _amplitude_at(item.samples[:8000], 8000, 440) == pytest.approx(0.4, rel=0.05)
    assert np.abs(item.samples).max() <= 1


def test_bad_files_raise_format_error_naming_the_file(tmp_path):
    wav = _write_wav(tmp_path / "a.wav", [_tone(440, 8000)], 8000)
    flac = write_av(tmp_path / "a.flac", [_tone(440, 8000, seconds=2)], "flac", 8000)
    mp4 = write_av(tmp_path / "a.mp4", [_tone(440, 8000)], rate=8000, video_frames=10)
    cases = [
        (wav, "truncated: 7978 of 16000 bytes"),  # FFmpeg alone would read it as shorter
        (flac, "corrupt audio after"),
        (mp4, "unreadable audio"),  # the index, written last, is lost
    ]
    for source, match in cases:
        cut = tmp_path / f"cut_{source.name}"
        cut.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])
        with pytest.raises(FormatError, match=match) as caught:
            read_audio(cut, 8000)
        assert caught.value.path == str(cut) and str(cut) in str(caught.value)
    with pytest.raises(FormatError, match="no audio samples decoded"):
        read_audio(_write_wav(tmp_path / "empty.wav", [[]], 8000))
    (tmp_path / "notes.wav").write_text("not audio\n" * 50)
    with pytest.raises(FormatError, match="unreadable audio"):
        read_audio(tmp_path / "notes.wav")
    with pytest.raises(FormatError, match="no such file"):
        read_audio(tmp_path / "missing.wav")


@given(data=st.binary(max_size=2048), header=st.sampled_from([b"", b"RIFF\x00\x01\x00\x00WAVE"]))
def test_fuzz_random_bytes(tmp_path, data, header):
    (tmp_path / "x.wav").write_bytes(header + data)
    with contextlib.suppress(FormatError):
        read_audio(tmp_path / "x.wav", 8000)


def test_fit_length_centre_crops_and_pads():
    samples = np.arange(10, dtype=np.float32)
    cropped, count = fit_length(samples, 4)
    np.testing.assert_array_equal(cropped, [3, 4, 5, 6])
    assert count == 4
    padded, count = fit_length(samples, 12)
    np.testing.assert_array_equal(padded, [*range(10), 0, 0])
    assert count == 10 and padded.dtype == np.float32


# --- log-mel features -------------------------------------------------------------------------


def test_filterbank_is_slaney_with_unit_area():
    fine = melspec.mel_filterbank(16000, 16000, 40)  # 1 Hz bins
    apexes = fine.argmax(0)
    steps = np.diff(apexes.astype(float))
    linear, log = apexes < 1000, apexes[:-1] > 1000
    assert np.ptp(steps[linear[:-1] & linear[1:]]) <= 1  # equal spacing below 1 kHz
    ratios = apexes[1:][log] / apexes[:-1][log]
    assert np.ptp(ratios) < 2e-3  # geometric spacing above
    np.testing.assert_allclose(fine.sum(0), 1, rtol=1e-3)  # unit area in Hz
    coarse = melspec.mel_filterbank(16000, 400, 40)
    assert coarse.shape == (201, 40)
    np.testing.assert_allclose(coarse.sum(0) * 40, 1, rtol=0.1)  # 40 Hz bins


def test_tone_lands_in_its_band():
    apexes = melspec.mel_filterbank(16000, 16000, 40).argmax(0)  # band centres in Hz
    tones = np.stack([_tone(apexes[band], 16000) for band in (5, 20, 35)])
    log_mel = melspec.log_mel_spectrogram(tones, 16000, n_mels=40)
    assert log_mel.shape == (3, melspec.num_frames(16000, 160), 40) == (3, 101, 40)
    np.testing.assert_array_equal(np.asarray(log_mel[:, 50]).argmax(-1), [5, 20, 35])


def test_matches_scipy_stft_and_jits():
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, (2, 4000)).astype(np.float32)
    _, _, stft = scipy.signal.stft(samples, window="hann", nperseg=400, noverlap=240)
    power = np.abs(stft * scipy.signal.get_window("hann", 400).sum()) ** 2  # undo its scaling
    filters = melspec.mel_filterbank(16000, 400, 64)
    expected = np.log(np.swapaxes(power, 1, 2) @ filters + melspec.EPS)
    features = functools.partial(melspec.log_mel_spectrogram, rate_hz=16000, n_mels=64)
    eager, jitted = features(samples), jax.jit(features)(samples)
    assert eager.shape == jitted.shape == expected.shape == (2, 26, 64)
    np.testing.assert_allclose(eager, expected, atol=1e-4)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)


def test_normalize_masks_padding_and_has_finite_gradients():
    clips = np.zeros((3, 1600), np.float32)  # a full clip, a half-padded one, digital silence
    clips[0] = _tone(700, 16000, seconds=0.1)
    clips[1, :800] = _tone(700, 16000, seconds=0.05)
    mask = melspec.frame_mask(jnp.array([1600, 800, 1600]), 1600, 160)
    assert mask.shape == (3, 11) and mask.sum(-1).tolist() == [11, 6, 11]

    @jax.jit
    def features_and_gradient(samples, cotangent):
        def features(samples):
            return melspec.normalize(melspec.log_mel_spectrogram(samples, 16000, n_mels=40), mask)

        normalized, pullback = jax.vjp(features, samples)
        return normalized, pullback(cotangent)[0]

    cotangent = np.random.default_rng(0).normal(size=(3, 11, 40)).astype(np.float32)
    normalized, gradient = features_and_gradient(clips, cotangent)
    real = np.asarray(normalized[1, :6])
    assert abs(real.mean()) < 1e-5 and real.std() == pytest.approx(1, rel=1e-3)
    assert not np.asarray(normalized[1, 6:]).any()
    assert np.abs(normalized[2]).max() < 0.01  # silence: its mean's rounding, over the floor
    assert np.isfinite(gradient).all() and np.abs(gradient[0]).max() > 0


def test_mmjax_data_ingest_format_audio_reads_a_folder_of_recordings(tmp_path, capsys):
    """The README's `--format audio`: argparse once refused it."""
    src = tmp_path / "sounds"
    src.mkdir()
    for i, hz in enumerate((200.0, 300.0, 400.0)):
        _write_wav(src / f"s{i}.wav", [_tone(hz, 4000, 0.5)], 4000)
    out = tmp_path / "ds"
    assert main(["data", "ingest", "--src", str(src), "--out", str(out), "--format", "audio",
                 "--audio-rate", "2000", "--audio-seconds", "1", "--eval-fraction", "0"]) == 0
    source = open_source(str(out), "train")
    records = [source[i] for i in range(len(source))]
    assert len(records) == 3
    assert all(r["audio"].shape == (2000,) and r["audio_length"] == 1000 for r in records)
