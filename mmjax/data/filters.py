"""Cleaning 1-D physiological signals (ECG): baseline, mains notch, band-pass, standardisation.

Signals are [samples, channels] arrays, filtered along axis 0. The IIR filters run forward
and backward (zero phase), so waves keep their timing and shape: a causal filter would
delay each frequency differently and distort the QRS complex and ST segment. Errors name
the `data.signal_*` config key that asked for the setting.
"""

import numpy as np
from scipy import ndimage
from scipy import signal as sp_signal

from mmjax.config import ConfigError

BASELINES = ("", "median")
BANDPASS_ORDER = 4  # per edge; forward-backward squares the response (-48 dB/octave)
MAX_HIGH_EDGE = 0.9  # of Nyquist: a higher band-pass edge is lowered to this
NOTCH_Q = 30.0  # centre / -3 dB width: 1.7 Hz at 50 Hz, narrow enough to spare the ECG
MEDIAN_SECONDS = (0.2, 0.6)  # longer than a P wave and a QRS, then than a T wave
STD_FLOOR = 1e-3  # mV (1 uV, below any recorder's noise): a flat lead is not blown up


def _filtfilt(sos: np.ndarray, signal: np.ndarray, key: str) -> np.ndarray:
    """Zero-phase filtering, padded at each end by scipy's rule of 3 x (2 x sections + 1)
    samples; a signal must be longer than that."""
    padlen = 3 * (2 * len(sos) + 1)
    if len(signal) <= padlen:
        raise ConfigError(f"{key}: a signal of {len(signal)} samples is too short for the "
                          f"filter's {padlen}-sample edge padding")
    return sp_signal.sosfiltfilt(sos, signal, axis=0, padlen=padlen)


def bandpass_sos(rate_hz: float, low_hz: float, high_hz: float) -> np.ndarray:
    """Butterworth band-pass sections. A high edge above MAX_HIGH_EDGE x Nyquist is lowered to
    it, so that one setting (e.g. 0.5-40 Hz) also serves datasets at low rates."""
    high = min(high_hz, MAX_HIGH_EDGE * rate_hz / 2)
    if not 0 < low_hz < high:
        raise ConfigError(
            f"data.signal_bandpass_hz=({low_hz}, {high_hz}) at {rate_hz} Hz: need "
            f"0 < low < high, with high at most {high:g} Hz ({MAX_HIGH_EDGE} x Nyquist)"
        )
    return sp_signal.butter(BANDPASS_ORDER, (low_hz, high), "bandpass", fs=rate_hz,
                            output="sos")


def bandpass(signal: np.ndarray, rate_hz: float, low_hz: float, high_hz: float) -> np.ndarray:
    """Removes baseline wander (below low_hz) and muscle and mains noise (above high_hz)."""
    return _filtfilt(bandpass_sos(rate_hz, low_hz, high_hz), signal, "data.signal_bandpass_hz")


def mains_tones(mains_hz: tuple[float, ...], rate_hz: float) -> list[float]:
    """Where mains hum lies in a recording at rate_hz: a mains frequency below Nyquist and
    its harmonics up to Nyquist; one at or above Nyquist at its alias.

    Sampling without an anti-aliasing filter (SynthMed does; so do some recorders) folds a
    tone at f onto |f - k * rate| for the nearest k: 60 Hz mains in a 100 Hz recording is a
    40 Hz tone, and 50 Hz sits at Nyquist. Only a fundamental is folded: harmonics above
    Nyquist are weak, and their aliases would scatter notches over the ECG band (60 Hz's at
    250 Hz fold to 70 and 10 Hz). A tone folding to 0 Hz is a constant offset, left to the
    band-pass or standardisation. (Data resampled by `mmjax data ingest` passed a polyphase
    anti-aliasing filter, so there mains above Nyquist is already gone.)
    """
    nyquist, tones = rate_hz / 2, set()
    for mains in mains_hz:
        if mains < nyquist:
            tones.update(mains * np.arange(1, int(nyquist // mains) + 1))
        else:
            tones.add(abs(mains - rate_hz * round(mains / rate_hz)))
    return sorted(t for t in {round(float(t), 9) for t in tones} if t > 0)


def notch_sos(rate_hz: float, tone_hz: float) -> np.ndarray:
    """A notch of width tone_hz / NOTCH_Q. At Nyquist, where iirnotch cannot go, the
    first-order notch its formula reduces to there: a zero at z = -1, unit gain at DC."""
    if np.isclose(tone_hz, rate_hz / 2):
        gain = 1 / (1 + np.tan(np.pi / (2 * NOTCH_Q)))
        return np.array([[gain, gain, 0.0, 1.0, 2 * gain - 1, 0.0]])
    return sp_signal.tf2sos(*sp_signal.iirnotch(tone_hz, NOTCH_Q, fs=rate_hz))


def notch(signal: np.ndarray, rate_hz: float, mains_hz: tuple[float, ...]) -> np.ndarray:
    """Removes mains hum at mains_tones(mains_hz, rate_hz)."""
    sections = [notch_sos(rate_hz, tone) for tone in mains_tones(mains_hz, rate_hz)]
    if not sections:
        return signal
    return _filtfilt(np.concatenate(sections), signal, "data.signal_notch_hz")


def median_baseline(signal: np.ndarray, rate_hz: float) -> np.ndarray:
    """The baseline under an ECG by the two-stage median filter of de Chazal et al. (2004):
    a 200 ms median removes P waves and QRS complexes, a 600 ms median of that T waves.
    Unlike a high-pass, it follows abrupt baseline shifts and does not ring."""
    for seconds in MEDIAN_SECONDS:
        signal = _median(signal, 2 * round(seconds * rate_hz / 2) + 1)
    return signal


def _median(signal: np.ndarray, window: int) -> np.ndarray:
    """Running median lead by lead: scipy's 1-D median filter is ~50x faster than a 2-D one
    with a (window, 1) footprint."""
    out = np.empty_like(signal)
    for lead in range(signal.shape[1]):
        out[:, lead] = ndimage.median_filter(signal[:, lead], size=window, mode="reflect")
    return out


def zscore(signal: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per channel: amplitudes differ between leads, recorders and
    patients' builds. The std is floored at STD_FLOOR so that a flat lead stays flat."""
    return (signal - signal.mean(axis=0)) / np.maximum(signal.std(axis=0), STD_FLOOR)


def _check(rate_hz, bandpass_hz, notch_hz, baseline) -> None:
    if baseline not in BASELINES:
        raise ConfigError(f"data.signal_baseline must be '' or 'median', got {baseline!r}")
    if bandpass_hz and len(bandpass_hz) != 2:
        raise ConfigError(f"data.signal_bandpass_hz must be () or (low, high), got {bandpass_hz}")
    if any(f <= 0 for f in notch_hz):
        raise ConfigError(f"data.signal_notch_hz must be positive frequencies, got {notch_hz}")
    for key, value in (("data.signal_bandpass_hz", bandpass_hz),
                       ("data.signal_notch_hz", notch_hz), ("data.signal_baseline", baseline)):
        if value and not rate_hz:
            raise ConfigError(f"{key} is set but the dataset has no signal_rate_hz")


def clean_signal(
    signal: np.ndarray,
    rate_hz: float | None,
    *,
    bandpass_hz: tuple[float, ...] = (),
    notch_hz: tuple[float, ...] = (),
    baseline: str = "",
    standardize: bool = False,
    leads: np.ndarray | None = None,
) -> np.ndarray:
    """[samples, leads] -> float32, cleaned as the data.signal_* keys of the same names ask.

    Order: median baseline, notch, band-pass, standardisation. The baseline goes first (as in
    de Chazal et al.), so the IIR filters do not start from the wander's offset at the
    record's ends; notch and band-pass are linear, so their order is immaterial;
    standardisation comes last, to measure the cleaned signal. Computed in float64, on
    recorded leads only: unrecorded ones (`leads` False, or all zero when `leads` is None)
    come back exactly zero. With nothing asked, returns the signal as float32 unchanged.
    """
    _check(rate_hz, bandpass_hz, notch_hz, baseline)
    if not (bandpass_hz or notch_hz or baseline or standardize):
        return signal.astype(np.float32)
    recorded = np.any(signal != 0, axis=0) if leads is None else np.asarray(leads, bool)
    x = signal[:, recorded].astype(np.float64)
    if baseline:
        x = x - median_baseline(x, rate_hz)
    if notch_hz:
        x = notch(x, rate_hz, notch_hz)
    if bandpass_hz:
        x = bandpass(x, rate_hz, *bandpass_hz)
    if standardize:
        x = zscore(x)
    out = np.zeros(signal.shape, np.float32)
    out[:, recorded] = x
    return out
