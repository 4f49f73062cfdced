"""Apical four-chamber echo clips of SynthMed patients."""

import numpy as np

from mmjax.data.synthmed.beats import beat_times
from mmjax.data.synthmed.drawing import check_size, waves
from mmjax.data.synthmed.patients import NORMAL_CTR, Patient

# The cardiac cycle, from the R wave: systole, then diastole with the atria's contribution last.
SYSTOLE_S = 0.32  # at RR = 1 s; scales with sqrt(RR), as the QT interval does
ATRIAL_KICK = 0.2  # share of ventricular filling from atrial contraction, none in AF

# The view: apical four-chamber; x to the image right and depth y down from the probe, as
# fractions of the image side. The left heart is on the image right, the apices at the top.
ECHO_FPS = 10.0  # 16 frames span 1.6 s: 1.5-2 beats at resting rates
PROBE_Y, SECTOR_DEPTH, SECTOR_HALF_ANGLE = 0.02, 0.92, np.deg2rad(42.0)
HEART_SIZE_EXPONENT = 0.5  # chamber size ~ (CTR / mean normal CTR) ** this ...
HEART_SIZE_ORIGIN = (0.5, 0.1)  # ... about the apex, so a large heart reaches deeper
# Ventricles (LV, RV) hang from their apex (x, y) with end-diastolic half width and half length,
# tilted (x shift per unit depth) and narrowed towards the apex (width change per half length);
# each atrium spans from under its ventricle's base (the moving valve plane) to a fixed floor.
VENTRICLE_APICES, VENTRICLE_HALF_AXES = ((0.54, 0.13), (0.44, 0.22)), ((0.12, 0.25), (0.085, 0.2))
VENTRICLE_TILTS, VENTRICLE_TAPER = (0.2, -0.25), 0.3
ATRIUM_HALF_WIDTHS, ATRIUM_FLOOR, VALVE_GAP = (0.13, 0.11), 0.93, 0.04
ATRIAL_WIDENING = 0.15  # atria fill while the ventricles empty
WALL = (0.035, 0.022, 0.015, 0.015)  # end-diastolic wall of LV, RV, LA, RA
# Volume ~ area ** 1.5 (a shape scaling alike in all three dimensions), so the end-systolic LV
# area is (1 - EF) ** (1 / 1.5) of the end-diastolic one. Widths take WIDTH_SHARE of the area
# change (the LV shortens less than it narrows); the wall keeps its area and thickens.
VOLUME_AREA_EXPONENT, WIDTH_SHARE = 1.5, 0.6
RV_END_SYSTOLIC_AREA = 0.6
# Echogenicity (amplitude, myocardium 1), shown log-compressed over a dynamic range.
TISSUE_ECHO, BLOOD_ECHO, TISSUE_TEXTURE = 0.06, 0.005, 0.6
ECHO_GAIN_DB, DYNAMIC_RANGE_DB, ATTENUATION_DB = (-10.0, -4.0), (50.0, 60.0), (4.0, 10.0)
SPECKLE_PERSISTENCE = 0.6  # share of the speckle intensity that stays from frame to frame
PROBE_OFFSET, PROBE_JITTER = 0.015, 0.004  # clip offset; random walk step per frame


def _contraction(times, onsets, intervals, atrial_kick: float) -> np.ndarray:
    """Ventricular emptying at `times`: 0 at end-diastole (the R wave), 1 at end-systole.

    Systole is a half cosine; diastole refills fast, then waits, then the atria top it up.
    """
    beat = np.searchsorted(onsets, times, side="right") - 1
    rr = intervals[beat]
    phase = (times - onsets[beat]) / rr
    systole = SYSTOLE_S / np.sqrt(rr)  # fraction of the cycle, below 0.6 as RR >= MIN_RR_S
    filled = np.clip((phase - systole) / (1.0 - systole), 0.0, 1.0)
    diastole = (1.0 - atrial_kick) * (1.0 - filled) ** 4 + atrial_kick * (1.0 - filled**6)
    return np.where(phase < systole, 0.5 - 0.5 * np.cos(np.pi * phase / systole), diastole)


def _chambers(patient: Patient, contraction):
    """Per chamber (LV, RV, LA, RA) and frame: cavity centre x, y, half axes, tilt, taper, wall."""
    scale = (patient.cardiothoracic_ratio / np.mean(NORMAL_CTR)) ** HEART_SIZE_EXPONENT
    origin, tilt = np.array(HEART_SIZE_ORIGIN), np.array(VENTRICLE_TILTS)[:, None]
    apex_x, apex_y = (origin + scale * (np.array(VENTRICLE_APICES) - origin)).T[..., None]
    lv_end_systolic_area = (1.0 - patient.ejection_fraction / 100.0) ** (1 / VOLUME_AREA_EXPONENT)
    end_systolic_area = np.array([[lv_end_systolic_area], [RV_END_SYSTOLIC_AREA]])
    # Column 0 is end-diastole, whose wall area every frame keeps.
    contraction = np.concatenate([[0.0], contraction])
    area = 1.0 - (1.0 - end_systolic_area) * contraction  # [ventricles, 1 + frames]
    half_width, half_length = scale * np.array(VENTRICLE_HALF_AXES).T[..., None]
    width, length = half_width * area**WIDTH_SHARE, half_length * area ** (1.0 - WIDTH_SHARE)
    top = apex_y + 2 * length + scale * VALVE_GAP  # of the atria
    floor = origin[1] + scale * (ATRIUM_FLOOR - origin[1])
    atrium_width = scale * np.array(ATRIUM_HALF_WIDTHS)[:, None]
    cx = np.concatenate([apex_x + tilt * length, apex_x + 2 * tilt * length])
    cy = np.concatenate([apex_y + length, (top + floor) / 2])
    half_x = np.concatenate([width, atrium_width * (1.0 + ATRIAL_WIDENING * contraction)])
    half_y = np.concatenate([length, (floor - top) / 2])
    tilt = np.broadcast_to(np.concatenate([tilt, np.zeros_like(tilt)]), cx.shape)
    taper = np.broadcast_to([[VENTRICLE_TAPER]] * 2 + [[0.0]] * 2, cx.shape)
    wall = np.array(WALL)[:, None]
    wall_area = (half_x[:, :1] + wall) * (half_y[:, :1] + wall) - half_x[:, :1] * half_y[:, :1]
    walls = 0.5 * (np.sqrt((half_x + half_y) ** 2 + 4 * wall_area) - half_x - half_y)
    return tuple(q[:, 1:].astype(np.float32) for q in (cx, cy, half_x, half_y, tilt, taper, walls))


def _union_of_ellipses(axis, cx, cy, half_x, half_y, tilt, taper) -> np.ndarray:
    """Anti-aliased union of per-frame ellipses [chambers, frames] on the grid `axis`: [T, S, S].

    Tilt shears and taper narrows an ellipse along y; neither changes its area. Each ellipse
    is drawn only within its bounding box.
    """
    pixel = np.float32(1.0 / len(axis))
    cx, cy, half_x, half_y, tilt, taper = (
        q[..., None] for q in (cx, cy, half_x, half_y, tilt, taper)
    )
    down = (axis - cy) / half_y  # [C, T, rows]
    sharpness = np.minimum(half_x, half_y) * (0.5 / pixel)  # pixels per unit of radius**2
    middle = cx + tilt * half_y * down
    stretch = np.sqrt(sharpness) / (half_x * np.maximum(1.0 + taper * down, 0.5))
    rows = 0.5 + sharpness * (1.0 - down**2)
    reach = half_x * (1.0 + taper) + np.abs(tilt) * half_y + 2 * pixel
    bounds = [
        (cy - half_y - 2 * pixel).min((1, 2)),
        (cy + half_y + 2 * pixel).max((1, 2)),
        (cx - reach).min((1, 2)),
        (cx + reach).max((1, 2)),
    ]
    union = np.zeros((cx.shape[1], len(axis), len(axis)), np.float32)
    for c, (top, bottom, left, right) in enumerate(np.searchsorted(axis, bounds).T):
        box_rows = (c, slice(None), slice(top, bottom), None)
        across = (axis[left:right] - middle[box_rows]) * stretch[box_rows]
        inside = rows[box_rows] - across**2
        box = union[:, top:bottom, left:right]
        np.maximum(box, inside, out=box)
    return np.minimum(union, 1.0, out=union)


def draw_echo(patient: Patient, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Apical four-chamber B-mode clip at ECHO_FPS: uint8 [frames, size, size], 0 outside the fan.

    The LV's area follows the cardiac cycle, its excursion set by the ejection fraction and its
    size by the heart's; beats follow the patient's rhythm.
    """
    check_size(size)
    axis = ((np.arange(size) + 0.5) / size).astype(np.float32)
    lateral, depth = axis[None, :] - 0.5, axis[:, None] - PROBE_Y
    radius = np.sqrt(lateral**2 + depth**2) / SECTOR_DEPTH
    fan = (radius < 1.0) & (np.abs(np.arctan2(lateral, depth)) < SECTOR_HALF_ANGLE)
    # Acquisition: gain, dynamic range, net attenuation after time-gain compensation, texture.
    gain, dynamic_range = rng.uniform(*ECHO_GAIN_DB), rng.uniform(*DYNAMIC_RANGE_DB)
    decibels = gain + dynamic_range - rng.uniform(*ATTENUATION_DB) * radius
    texture = TISSUE_TEXTURE * waves(rng, *np.meshgrid(axis, axis), 4, 6 * np.pi)
    tissue = (TISSUE_ECHO * np.exp(texture)).astype(np.float32)
    # Fully developed speckle: exponential intensity, part of it persisting from frame to frame.
    persistent = SPECKLE_PERSISTENCE * rng.standard_exponential((size, size), np.float32) + 1e-6
    speckle = rng.random((frames, size, size), np.float32)
    speckle = np.log(1.0 - speckle, out=speckle)
    speckle *= SPECKLE_PERSISTENCE - 1.0
    speckle += persistent
    probe = rng.uniform(-PROBE_OFFSET, PROBE_OFFSET, 2) + np.cumsum(
        rng.normal(0.0, PROBE_JITTER, (frames, 2)), axis=0
    )

    onsets, intervals = beat_times(patient, frames / ECHO_FPS, rng)
    atrial_kick = 0.0 if patient.has("atrial_fibrillation") else ATRIAL_KICK
    contraction = _contraction(np.arange(frames) / ECHO_FPS, onsets, intervals, atrial_kick)
    cx, cy, half_x, half_y, tilt, taper, walls = _chambers(patient, contraction)
    cx, cy = cx + probe[:, 0].astype(np.float32), cy + probe[:, 1].astype(np.float32)
    heart = _union_of_ellipses(axis, cx, cy, half_x + walls, half_y + walls, tilt, taper)
    blood = _union_of_ellipses(axis, cx, cy, half_x, half_y, tilt, taper)
    intensity = heart  # amplitude first: the myocardium is brightest, blood darkest
    intensity *= 1.0 - tissue
    intensity += tissue
    intensity += (BLOOD_ECHO - intensity) * blood
    intensity *= intensity
    intensity *= speckle
    # Log compression over the dynamic range to 0..255; far below it outside the fan.
    pixels = np.log10(intensity)
    pixels *= np.float32(10.0 * 255.0 / dynamic_range)
    pixels += np.where(fan, decibels * (255.0 / dynamic_range), -1e4).astype(np.float32)
    return np.clip(pixels, 0.0, 255.0, out=pixels).astype(np.uint8)
