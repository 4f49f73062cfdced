"""Synthetic heart-sound recordings (phonocardiograms) for SynthMed patients.

A stethoscope at the apex hears each beat as S1 (mitral then tricuspid closure, at the onset of
systole) and S2 (aortic then pulmonary closure, at its end); a failing ventricle may add S3 in
early diastole, a leaking mitral valve or a narrowed aortic valve a systolic murmur. Each sound
is a few Gaussian-windowed cosines placed at the times `beat_timing` draws; the rhythm model is
synthmed's (respiratory sinus arrhythmia, or AF's gamma-distributed RR intervals), so rate, AF,
ejection fraction and murmur type can be heard, as in the PhysioNet/CinC 2016 and CirCor
recordings that audio models are evaluated on.

Findings change only what they name: the same rng gives the same beats, sounds and noise
whatever the murmur, S3 or ejection fraction (the murmur's noise is drawn last).
"""

import dataclasses

import numpy as np

from mmjax.data.rhythm import AF_RR_CV, BREATHING_HZ, MIN_RR_S, SINUS_JITTER, SINUS_VARIATION

MURMURS = ("", "mitral_regurgitation", "aortic_stenosis")
AUDIO_RATE_HZ = 2000  # PhysioNet/CinC 2016 PCGs are 2 kHz
AUDIO_SECONDS = 5.0
MIN_RATE_HZ = 1000.0  # twice the highest frequency modelled (BREATH_HZ's top): nothing aliases
PEAK = 0.9  # |sample| of the loudest sample after normalisation

SOUND_MARGIN_S = 0.1  # a beat this long after the record's end still reaches into it
# Electromechanical systole, Q to A2: QS2 = 546 - 2.1 * HR ms (Weissler, Harris & Schoenfeld,
# Circulation 1968; men, women 549 - 2.0 HR), over the rates it was fitted on. S1 comes Q_S1_S
# after Q, so S1 to S2 is QS2 - Q_S1_S: 0.37 of the cycle at 60 bpm, 0.49 at 120 bpm.
QS2_S, QS2_S_PER_BPM, QS2_RATE_RANGE, Q_S1_S = 0.546, 0.0021, (40.0, 150.0), 0.05

# Sound components: band of their two cosines (Hz) and Gaussian width (s), each drawn per patient.
# With the splits below S1 lasts ~120 ms and S2 ~90 ms, as segmented by Schmidt et al. (Physiol
# Meas 2010: 122 +- 22 and 92 +- 22 ms); S2 is higher pitched, S3 a low thud.
SOUNDS = {
    "M1": ((40.0, 100.0), (0.016, 0.022)),
    "T1": ((40.0, 100.0), (0.016, 0.022)),
    "A2": ((70.0, 200.0), (0.010, 0.015)),
    "P2": ((70.0, 200.0), (0.010, 0.015)),
    "S3": ((20.0, 50.0), (0.012, 0.018)),
}
S1_SPLIT_S = (0.02, 0.03)  # M1 to T1
S2_SPLIT_S = (0.015, 0.045)  # A2 to P2 in expiration and deep inspiration (physiological split)
S3_DELAY_S, S3_CLEARANCE_S = (0.12, 0.18), 0.1  # after A2; S3 only where S1 follows this later
# Peak levels, relative to a normal M1 at the mean rate (P2's: to A2). At the apex S1 is the
# louder sound; S3 is faint.
T1_LEVEL, A2_LEVEL, P2_LEVEL, S3_LEVEL = (0.4, 0.7), (0.5, 1.0), (0.4, 0.7), (0.25, 0.45)
BEAT_JITTER = 0.05  # log-amplitude standard deviation of every sound, beat to beat
# S1 follows peak LV dP/dt (Sakamoto et al., Circ Res 1965), which falls with the ejection
# fraction: S1 scales with EF / S1_EF_REFERENCE below it. After a short cycle the mitral leaflets
# are still open wide when systole starts and close louder, so S1 ~ (mean RR / preceding RR) **
# S1_CYCLE_EXPONENT: S1 varies beat to beat in AF.
S1_EF_REFERENCE, S1_CYCLE_EXPONENT = 55.0, 0.5

# Murmurs: band (Hz), and a trapezoid envelope over systole from `lead` s after M1 to `lag` s
# before A2, rising over `ramp` s (None: a diamond peaking mid-systole). Mitral regurgitation
# fills systole from S1 to S2 at a plateau (holosystolic); aortic stenosis starts once ejection
# does, after isovolumic contraction, and crescendos to mid-systole (ejection murmur), softening
# A2. Noise RMS relative to a normal M1 peak: peaks ~0.3-0.5 of S1, a grade 2-4/6 murmur.
MURMUR_SHAPES = {  # band, lead, lag, ramp
    "mitral_regurgitation": ((100.0, 400.0), 0.0, 0.0, 0.02),
    "aortic_stenosis": ((100.0, 300.0), 0.05, 0.01, None),
}
MURMUR_RMS, AORTIC_STENOSIS_A2 = (0.1, 0.17), 0.5
# Background, relative to a normal M1 peak: sensor and ambient noise; breath sounds, mostly in
# inspiration; and heart sounds damped in inspiration, when inflated lung lies over the heart.
NOISE_RMS, BREATH_RMS, BREATH_HZ = (0.01, 0.03), (0.01, 0.05), (100.0, 500.0)
INSPIRATION_DAMPING = (0.05, 0.2)


@dataclasses.dataclass(frozen=True)
class BeatTiming:
    """When each beat's sounds fall, in seconds from the record's start; the first beats precede
    it (their sounds reach into it) and the last may follow it."""

    s1: np.ndarray  # [beats] mitral closure, the onset of systole
    s2: np.ndarray  # [beats] aortic closure, the end of systole
    preceding_rr: np.ndarray  # [beats] the cycle before each beat, s; it sets how loud S1 is
    breathing_hz: float
    breathing_phase: float  # radians at time 0

    def inspiration(self, times) -> np.ndarray:
        """Depth of inspiration at `times`: 0 (full expiration) to 1."""
        return 0.5 + 0.5 * np.sin(2 * np.pi * self.breathing_hz * times + self.breathing_phase)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


def beat_timing(
    rng: np.random.Generator, *, seconds: float, heart_rate: float, atrial_fibrillation: bool
) -> BeatTiming:
    """Beats covering [0, seconds] at mean rate `heart_rate` (bpm), starting at a random point of
    a cycle. `phonocardiogram` draws these first from its rng, so a test can know them exactly."""
    _check_positive(seconds=seconds, heart_rate=heart_rate)
    breathing_hz, breathing_phase = rng.uniform(*BREATHING_HZ), rng.uniform(0, 2 * np.pi)
    first = rng.random()  # how far into its cycle the record starts
    mean_rr, count = 60.0 / heart_rate, int((seconds + SOUND_MARGIN_S) / MIN_RR_S) + 4
    if atrial_fibrillation:
        shape = rng.uniform(*AF_RR_CV) ** -2.0
        rr = mean_rr * rng.gamma(shape, 1.0 / shape, count)
    else:
        nominal = mean_rr * (np.arange(count) - 1.0 - first)  # beat times before variation
        inspiration = 0.5 + 0.5 * np.sin(2 * np.pi * breathing_hz * nominal + breathing_phase)
        variation = rng.uniform(*SINUS_VARIATION) * (1.0 - 2.0 * inspiration)
        rr = mean_rr * (1.0 + variation + SINUS_JITTER * rng.standard_normal(count))
    rr = np.maximum(rr, MIN_RR_S)  # rr[k]: the cycle ending at beat k
    s1 = np.cumsum(rr) - rr[0] - rr[1] - first * rr[2]  # beat 1 is the last at or before 0
    rate = np.clip(60.0 / rr[1:], *QS2_RATE_RANGE)  # of each beat's own cycle
    s2 = s1[:-1] + QS2_S - QS2_S_PER_BPM * rate - Q_S1_S
    keep = s1[:-1] < seconds + SOUND_MARGIN_S
    return BeatTiming(s1[:-1][keep], s2[keep], rr[:-1][keep], breathing_hz, breathing_phase)


def _sound_shapes(rng, rate_hz: float) -> np.ndarray:
    """One waveform per SOUNDS component, centred, peak 1: [components, 2 * half + 1]."""
    bands, widths = (np.array([sound[i] for sound in SOUNDS.values()]) for i in range(2))
    half = int(np.ceil(4.0 * widths.max() * rate_hz))
    times = np.arange(-half, half + 1) / rate_hz
    hz = rng.uniform(bands[:, :1], bands[:, 1:], (len(SOUNDS), 2))
    phases = rng.uniform(0, 2 * np.pi, (len(SOUNDS), 2))
    width = rng.uniform(widths[:, :1], widths[:, 1:])
    cosines = np.cos(2 * np.pi * hz[..., None] * times + phases[..., None]).sum(axis=1)
    waves = np.exp(-0.5 * (times / width) ** 2) * cosines
    return waves / np.abs(waves).max(axis=1, keepdims=True)


def _band_noise(rng, samples: int, rate_hz: float, band) -> np.ndarray:
    """Gaussian noise with a flat spectrum within `band` (Hz) and none outside, unit RMS."""
    low, high = np.searchsorted(np.fft.rfftfreq(samples, 1.0 / rate_hz), band, side="left")
    spectrum = np.zeros(samples // 2 + 1, complex)
    spectrum[low:high] = rng.standard_normal((high - low, 2)) @ (1.0, 1j)
    noise = np.fft.irfft(spectrum, samples)
    return noise / (noise.std() or 1.0)


def _murmur_envelope(times, timing: BeatTiming, murmur: str) -> np.ndarray:
    """0..1 over each beat's systole, in the shape of `murmur`."""
    _, lead, lag, ramp = MURMUR_SHAPES[murmur]
    beat = np.maximum(np.searchsorted(timing.s1, times, side="right") - 1, 0)
    start, end = timing.s1[beat] + lead, timing.s2[beat] - lag
    rise = (end - start) / 2 if ramp is None else ramp
    return np.clip(np.minimum(times - start, end - times) / rise, 0.0, 1.0)


def _check_recording(rate_hz: float, seconds: float, heart_rate: float,
                     ejection_fraction: float, murmur: str) -> int:
    """Refuses arguments `phonocardiogram` cannot record; returns its number of samples."""
    _check_positive(rate_hz=rate_hz, seconds=seconds, heart_rate=heart_rate)
    if rate_hz < MIN_RATE_HZ:
        raise ValueError(f"rate_hz must be at least {MIN_RATE_HZ}, got {rate_hz}")
    samples = round(rate_hz * seconds)
    if samples < 1:
        raise ValueError(f"seconds must give at least one sample at {rate_hz} Hz, got {seconds}")
    if not 0 < ejection_fraction <= 100:
        raise ValueError(
            f"ejection_fraction must be a percentage in (0, 100], got {ejection_fraction}"
        )
    if murmur not in MURMURS:
        raise ValueError(f"murmur must be one of {MURMURS}, got {murmur!r}")
    return samples


def _onsets(rng, timing: BeatTiming) -> np.ndarray:
    """When each SOUNDS component of each beat falls: [components, beats] s."""
    s2_split = np.interp(timing.inspiration(timing.s2), (0.0, 1.0), S2_SPLIT_S)
    s3 = timing.s2 + rng.uniform(*S3_DELAY_S)
    return np.stack(
        [timing.s1, timing.s1 + rng.uniform(*S1_SPLIT_S), timing.s2, timing.s2 + s2_split, s3]
    )


def _levels(rng, timing: BeatTiming, s3, heart_rate: float, ejection_fraction: float,
            murmur: str, third_sound: bool) -> np.ndarray:
    """Peak level of each SOUNDS component of each beat, jittered: [components, beats]."""
    s1_level = (
        min(ejection_fraction / S1_EF_REFERENCE, 1.0)
        * (60.0 / heart_rate / timing.preceding_rr) ** S1_CYCLE_EXPONENT
    )
    a2_level = rng.uniform(*A2_LEVEL)
    stenosis = AORTIC_STENOSIS_A2 if murmur == "aortic_stenosis" else 1.0  # P2 stays
    s3_clear = s3 + S3_CLEARANCE_S < np.append(timing.s1[1:], np.inf)
    levels = np.stack(
        [
            s1_level,
            s1_level * rng.uniform(*T1_LEVEL),
            np.full_like(s1_level, a2_level * stenosis),
            np.full_like(s1_level, a2_level * rng.uniform(*P2_LEVEL)),
            rng.uniform(*S3_LEVEL) * (third_sound & s3_clear),
        ]
    )
    return levels * np.exp(BEAT_JITTER * rng.standard_normal(levels.shape))


def _place(shapes: np.ndarray, onsets, levels, rate_hz: float, samples: int) -> np.ndarray:
    """Every sound's waveform, added in at its sample: [samples]."""
    half = shapes.shape[1] // 2
    starts = np.round(onsets * rate_hz).astype(int)[..., None] - half
    index = starts + np.arange(shapes.shape[1])  # [components, beats, waveform]
    waves = levels[..., None] * shapes[:, None]
    inside = (index >= 0) & (index < samples)
    return np.bincount(index[inside], waves[inside], minlength=samples)


def _auscultated(rng, heart: np.ndarray, timing: BeatTiming, rate_hz: float,
                 murmur: str) -> np.ndarray:
    """The heart sounds as heard: with noise, breath sounds, inspiration's damping, a murmur."""
    samples = len(heart)
    times = np.arange(samples) / rate_hz
    inspiration = timing.inspiration(times)
    noise = rng.uniform(*NOISE_RMS) * rng.standard_normal(samples)
    breath = rng.uniform(*BREATH_RMS) * inspiration * _band_noise(rng, samples, rate_hz, BREATH_HZ)
    damping = rng.uniform(*INSPIRATION_DAMPING)
    if murmur:
        band = MURMUR_SHAPES[murmur][0]
        envelope = rng.uniform(*MURMUR_RMS) * _murmur_envelope(times, timing, murmur)
        heart = heart + envelope * _band_noise(rng, samples, rate_hz, band)
    return heart * (1.0 - damping * inspiration) + noise + breath


def phonocardiogram(
    rng: np.random.Generator,
    *,
    rate_hz: float,
    seconds: float,
    heart_rate: float,
    atrial_fibrillation: bool,
    ejection_fraction: float,
    murmur: str = "",
    third_sound: bool = False,
) -> np.ndarray:
    """float32 [round(rate_hz * seconds)] in [-1, 1]: a heart-sound recording at the apex.

    `heart_rate` in bpm, `ejection_fraction` in percent (as synthmed.Patient's); a reduced one
    softens S1. `murmur` is one of MURMURS, `third_sound` adds an S3 gallop. The loudest sample
    is scaled to PEAK. The beats are `beat_timing(rng, ...)`, drawn first.
    """
    samples = _check_recording(rate_hz, seconds, heart_rate, ejection_fraction, murmur)
    timing = beat_timing(
        rng, seconds=seconds, heart_rate=heart_rate, atrial_fibrillation=atrial_fibrillation
    )
    shapes = _sound_shapes(rng, rate_hz)
    onsets = _onsets(rng, timing)
    s3 = onsets[-1]  # SOUNDS ends with S3
    levels = _levels(rng, timing, s3, heart_rate, ejection_fraction, murmur, third_sound)
    heart = _place(shapes, onsets, levels, rate_hz, samples)
    recording = _auscultated(rng, heart, timing, rate_hz, murmur)
    return (recording * (PEAK / np.abs(recording).max())).astype(np.float32)
