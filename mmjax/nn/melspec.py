"""Log-mel spectrograms in jax.numpy, so audio features are computed inside the jitted model.

Conventions follow librosa's defaults (and Whisper's): frames centred on multiples of
`hop` with zero padding at both ends, a periodic Hann window, the power spectrum, and
a Slaney mel filterbank (linear below 1 kHz, logarithmic above) whose triangles have
unit area in Hz, so a band's energy does not grow with its width. Shapes depend only
on the input's shape and the static arguments; everything runs in float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-6  # power floor: digital silence sits ~80 dB below a full-scale tone, not at -inf
MIN_LOG_HZ = 1000.0  # the Slaney scale is linear below this frequency and logarithmic above
HZ_PER_MEL = 200.0 / 3
LOG_STEP = np.log(6.4) / 27  # log-Hz per mel above MIN_LOG_HZ


def num_frames(n_samples: int, hop: int) -> int:
    """Frames of a clip of `n_samples`: one centred on every multiple of `hop`."""
    return 1 + n_samples // hop


def log_mel_spectrogram(
    samples: jax.Array,
    rate_hz: float,
    *,
    n_fft: int = 400,
    hop: int = 160,
    n_mels: int = 80,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> jax.Array:
    """float [..., N] -> float32 [..., num_frames(N, hop), n_mels]: log(mel power + EPS).

    The defaults are 25 ms windows every 10 ms at 16 kHz.
    """
    samples = jnp.asarray(samples, jnp.float32)
    pad = [(0, 0)] * (samples.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = jnp.pad(samples, pad)
    starts = hop * np.arange(num_frames(samples.shape[-1], hop))
    frames = padded[..., starts[:, None] + np.arange(n_fft)]  # [..., T, n_fft]
    spectrum = jnp.fft.rfft(frames * _hann(n_fft), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # abs() would take a root only to square it
    filters = mel_filterbank(rate_hz, n_fft, n_mels, f_min, f_max)
    # HIGHEST: TPU bf16 and GPU TF32 matmuls would otherwise round the power spectrum.
    mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(mel + EPS)


def frame_mask(lengths: jax.Array, n_samples: int, hop: int) -> jax.Array:
    """bool [..., num_frames(n_samples, hop)]: of clips of `lengths` real samples zero padded
    to `n_samples` (as `formats.audio.fit_length` does), the frames each would have unpadded."""
    centres = hop * jnp.arange(num_frames(n_samples, hop))
    return centres <= jnp.asarray(lengths)[..., None]


def normalize(log_mel: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Zero mean and unit variance per example over its masked frames and all bands; masked-out
    frames become 0.

    Per-example statistics rather than dataset constants (as in AST) remove recording gain,
    which varies across devices, and need no pass over the data.
    """
    if mask is None:
        mask = jnp.ones(log_mel.shape[:-1], bool)
    weights = mask[..., None].astype(log_mel.dtype)
    count = jnp.maximum(weights.sum((-2, -1), keepdims=True) * log_mel.shape[-1], 1)
    mean = (log_mel * weights).sum((-2, -1), keepdims=True) / count
    centred = (log_mel - mean) * weights
    variance = (centred**2).sum((-2, -1), keepdims=True) / count
    return centred * jax.lax.rsqrt(variance + 1e-5)  # finite on silence and its gradient


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    rate_hz: float, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """float32 [n_fft // 2 + 1, n_mels]: Slaney triangles of unit area in Hz (librosa's
    `filters.mel` with its defaults); built once per setting, in numpy."""
    f_max = rate_hz / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= rate_hz / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= rate_hz / 2, got {f_min}, {f_max}, {rate_hz}")
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    bins_hz = np.fft.rfftfreq(n_fft, 1 / rate_hz)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    triangles = np.maximum(0, np.minimum(rising, falling))
    filters = (triangles * 2 / (upper - lower)).T.astype(np.float32)
    filters.flags.writeable = False  # shared by the cache
    return filters


def _hann(n: int) -> np.ndarray:
    """The periodic Hann window, whose hop-shifted copies sum to a constant."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def _hz_to_mel(hz):
    hz = np.asarray(hz, np.float64)
    log_part = MIN_LOG_HZ / HZ_PER_MEL + np.log(np.maximum(hz, MIN_LOG_HZ) / MIN_LOG_HZ) / LOG_STEP
    return np.where(hz < MIN_LOG_HZ, hz / HZ_PER_MEL, log_part)


def _mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    min_log_mel = MIN_LOG_HZ / HZ_PER_MEL
    log_part = MIN_LOG_HZ * np.exp(LOG_STEP * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel < min_log_mel, mel * HZ_PER_MEL, log_part)
