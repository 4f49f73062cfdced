"""Heart sounds: recordings are bounded and reproducible, and what a listener or a model would
use is in the audio: the rate and AF's irregularity from the envelope, murmurs in systole in
their shape, S3 after S2, and S1 softening with the ejection fraction."""

import numpy as np
import pytest
import scipy.signal

from mmjax.data import heart_sounds

RATE_HZ, SECONDS = heart_sounds.AUDIO_RATE_HZ, heart_sounds.AUDIO_SECONDS
SEEDS = range(6)
ENVELOPE_HZ, ENVELOPE_SMOOTHING_S = 100, 0.06
SOUNDS_BAND = scipy.signal.butter(4, (20.0, 200.0), "bandpass", fs=RATE_HZ, output="sos")
S3_BAND = scipy.signal.butter(4, 60.0, "lowpass", fs=RATE_HZ, output="sos")
# Windows around each beat's S1 and S2 times (s), clear of the sounds themselves.
SYSTOLE = (0.09, -0.05)  # after S1, before S2
DIASTOLE = (0.1, -0.08)  # after S2, before the next S1
EARLY_SYSTOLE, MID_SYSTOLE_HALF_WIDTH = (0.09, 0.15), 0.03
S3_WINDOW = (0.09, 0.23)  # after S2
S1_PEAK, S2_PEAK = (-0.04, 0.06), (-0.03, 0.07)


def _kwargs(**changes) -> dict:
    kwargs = dict(
        rate_hz=RATE_HZ,
        seconds=SECONDS,
        heart_rate=72.0,
        atrial_fibrillation=False,
        ejection_fraction=60.0,
    )
    return kwargs | changes


def _record(seed: int, **changes) -> np.ndarray:
    return heart_sounds.phonocardiogram(np.random.default_rng(seed), **_kwargs(**changes))


def _timing(seed: int, **changes) -> heart_sounds.BeatTiming:
    """The beats `_record(seed, **changes)` holds: phonocardiogram draws them first."""
    kwargs = _kwargs(**changes)
    return heart_sounds.beat_timing(
        np.random.default_rng(seed),
        seconds=kwargs["seconds"],
        heart_rate=kwargs["heart_rate"],
        atrial_fibrillation=kwargs["atrial_fibrillation"],
    )


def _envelope(record: np.ndarray) -> np.ndarray:
    """Smoothed Hilbert envelope of the 20-200 Hz band, at ENVELOPE_HZ."""
    magnitude = np.abs(scipy.signal.hilbert(scipy.signal.sosfiltfilt(SOUNDS_BAND, record)))
    window = np.hanning(round(ENVELOPE_SMOOTHING_S * RATE_HZ))
    smooth = np.convolve(magnitude, window / window.sum(), "same")
    return smooth[:: RATE_HZ // ENVELOPE_HZ]


def _rate_from_envelope(record: np.ndarray) -> float:
    """Beats per minute: the strongest autocorrelation peak of the envelope at 40-200 bpm."""
    envelope = _envelope(record)
    envelope -= envelope.mean()
    correlation = np.correlate(envelope, envelope, "full")[len(envelope) - 1 :]
    peaks, _ = scipy.signal.find_peaks(correlation)
    peaks = peaks[(peaks > ENVELOPE_HZ * 60 / 200) & (peaks < ENVELOPE_HZ * 60 / 40)]
    best = peaks[np.argmax(correlation[peaks])]
    before, at, after = correlation[best - 1 : best + 2]
    lag = best + 0.5 * (before - after) / (before - 2 * at + after)  # parabolic interpolation
    return 60.0 * ENVELOPE_HZ / lag


def _cycle_variation(record: np.ndarray) -> float:
    """Coefficient of variation of the cycle length between envelope peaks two apart (S1 to S1
    and S2 to S2, without telling them apart)."""
    envelope = _envelope(record)
    peaks, _ = scipy.signal.find_peaks(
        envelope, height=0.15 * envelope.max(), distance=0.1 * ENVELOPE_HZ
    )
    cycles = peaks[2:] - peaks[:-2]
    return cycles.std() / cycles.mean()


def _mask(starts, ends) -> np.ndarray:
    """Samples of the record within any window [start, end)."""
    times = np.arange(round(RATE_HZ * SECONDS)) / RATE_HZ
    starts, ends = np.asarray(starts)[:, None], np.asarray(ends)[:, None]
    return ((times >= starts) & (times < ends)).any(axis=0)


def _systole(timing: heart_sounds.BeatTiming) -> np.ndarray:
    return _mask(timing.s1 + SYSTOLE[0], timing.s2 + SYSTOLE[1])


def _diastole(timing: heart_sounds.BeatTiming) -> np.ndarray:
    return _mask(timing.s2[:-1] + DIASTOLE[0], timing.s1[1:] + DIASTOLE[1])


def _energy(record: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(record[mask] ** 2))


def _s1_to_s2(record: np.ndarray, timing: heart_sounds.BeatTiming) -> float:
    """Median peak of S1 over median peak of S2, over the beats inside the record."""
    inside = (timing.s1 > -S1_PEAK[0]) & (timing.s2 + S2_PEAK[1] < SECONDS)
    peaks = [
        np.median([np.abs(record[_mask([t + low], [t + high])]).max() for t in times[inside]])
        for times, (low, high) in ((timing.s1, S1_PEAK), (timing.s2, S2_PEAK))
    ]
    return peaks[0] / peaks[1]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"rate_hz": 1500, "seconds": 2.3, "heart_rate": 130.0},
        {"atrial_fibrillation": True, "murmur": "mitral_regurgitation", "third_sound": True},
        {"ejection_fraction": 20.0, "murmur": "aortic_stenosis", "heart_rate": 45.0},
    ],
)
def test_bounded_and_reproducible(changes):
    record = _record(0, **changes)
    kwargs = _kwargs(**changes)
    assert record.shape == (round(kwargs["rate_hz"] * kwargs["seconds"]),)
    assert record.dtype == np.float32
    assert np.isfinite(record).all()
    assert np.abs(record).max() == pytest.approx(heart_sounds.PEAK, rel=1e-6)
    np.testing.assert_array_equal(record, _record(0, **changes))
    assert not np.allclose(record, _record(1, **changes))


@pytest.mark.parametrize("heart_rate", [60.0, 90.0, 120.0])
def test_rate_from_envelope(heart_rate):
    for seed in SEEDS:
        rate = _rate_from_envelope(_record(seed, heart_rate=heart_rate))
        assert rate == pytest.approx(heart_rate, rel=0.05), seed


def test_atrial_fibrillation_is_irregular():
    sinus = [_cycle_variation(_record(seed, heart_rate=80.0)) for seed in SEEDS]
    fibrillation = [
        _cycle_variation(_record(seed, heart_rate=80.0, atrial_fibrillation=True)) for seed in SEEDS
    ]
    assert max(sinus) < min(fibrillation)
    assert np.mean(fibrillation) > 3 * np.mean(sinus)


def test_murmurs_fill_systole_in_their_shape():
    mid_to_early = {}
    for seed in SEEDS:
        timing = _timing(seed)
        systole, diastole = _systole(timing), _diastole(timing)
        middle = (timing.s1 + timing.s2) / 2
        early = _mask(timing.s1 + EARLY_SYSTOLE[0], timing.s1 + EARLY_SYSTOLE[1])
        mid = _mask(middle - MID_SYSTOLE_HALF_WIDTH, middle + MID_SYSTOLE_HALF_WIDTH)
        quiet = _record(seed)
        quiet_ratio = _energy(quiet, systole) / _energy(quiet, diastole)
        assert quiet_ratio < 2.0, seed
        for murmur in heart_sounds.MURMURS[1:]:
            record = _record(seed, murmur=murmur)
            ratio = _energy(record, systole) / _energy(record, diastole)
            assert ratio > 4.0 * quiet_ratio, (seed, murmur)
            mid_to_early[murmur, seed] = _energy(record, mid) / _energy(record, early)
            # Diastole is the same recording up to the peak normalisation.
            scale = record[diastole] @ quiet[diastole] / (quiet[diastole] @ quiet[diastole])
            np.testing.assert_allclose(record[diastole], scale * quiet[diastole], atol=1e-5)
        assert 0.6 < mid_to_early["mitral_regurgitation", seed] < 1.6, seed  # plateau
        assert mid_to_early["aortic_stenosis", seed] > 1.5, seed  # crescendo-decrescendo
        assert mid_to_early["aortic_stenosis", seed] > mid_to_early["mitral_regurgitation", seed]


def test_third_sound_in_early_diastole():
    for seed in SEEDS:
        timing = _timing(seed)
        window = _mask(timing.s2 + S3_WINDOW[0], timing.s2 + S3_WINDOW[1])
        low = {
            gallop: scipy.signal.sosfiltfilt(S3_BAND, _record(seed, third_sound=gallop))
            for gallop in (False, True)
        }
        share = {gallop: _energy(x, window) / np.mean(x**2) for gallop, x in low.items()}
        assert share[True] > 2.0 * share[False], seed


def test_reduced_ejection_fraction_softens_s1():
    for seed in SEEDS:
        timing = _timing(seed)
        normal = _s1_to_s2(_record(seed, ejection_fraction=60.0), timing)
        reduced = _s1_to_s2(_record(seed, ejection_fraction=25.0), timing)
        assert reduced < 0.7 * normal, seed


@pytest.mark.parametrize(
    "name, value",
    [
        ("murmur", "tricuspid_regurgitation"),
        ("rate_hz", 0.0),
        ("rate_hz", 500.0),
        ("seconds", -1.0),
        ("seconds", 1e-5),
        ("heart_rate", 0.0),
        ("heart_rate", float("nan")),
        ("ejection_fraction", 0.0),
        ("ejection_fraction", 120.0),
    ],
)
def test_bad_arguments(name, value):
    with pytest.raises(ValueError, match=name):
        _record(0, **{name: value})
