"""PA chest radiograph phantoms of SynthMed patients, and their display windowing."""

import numpy as np

from mmjax.data.synthmed.drawing import check_size, waves
from mmjax.data.synthmed.patients import SIDES, Effusion, Nodule, Patient

MAX_PIXEL = 4095  # pixels are 12-bit

# Geometry, in patient units: x to the image right (the patient's left), y down, the image
# spans [-1, 1] before the acquisition pose and body size are applied.
THORAX_HALF_WIDTH = 0.74
THORAX_WIDTH_MM = 300.0
LUNG_CENTER, LUNG_HALF_AXES = (0.42, 0.10), (0.32, 0.86)  # per side, x mirrored
DOME_TOP = {"right": 0.30, "left": 0.36}  # the right hemidiaphragm sits higher
DOME_DROP = 0.24  # from the dome top down to the costophrenic angles
DOME_PEAK = 0.32  # distance of the dome top from the midline
ZONE_Y = {"upper": (-0.60, -0.28), "middle": (-0.28, 0.04), "lower": (0.04, 0.30)}
HILUM = (0.18, -0.05)
COLLAPSE_ANCHOR = (0.12, 0.40)  # a collapsing lung shrinks towards its hilum and base
HEART_CENTER_Y, HEART_HALF_HEIGHT = 0.24, 0.33
HEART_LEFTWARD = 0.65  # fraction of the heart width to the patient's left of the midline
EFFUSION_HEIGHT = (0.08, 0.4)  # fluid height above the costophrenic angle: base, per severity
MENISCUS_RISE = 0.25  # extra height of the fluid along the lateral chest wall
RIB_SPACING = 0.14
VESSEL_BRANCHES = 16  # vessels fanning out of each hilum over a full turn

# X-ray attenuation ("density") of each tissue; exposure maps density to pixel values.
LUNG, PNEUMOTHORAX_AIR = 0.18, 0.05
SOFT_TISSUE, MEDIASTINUM, HEART, ABDOMEN, FLUID = 0.5, 0.62, 0.68, 0.64, 0.6
SPINE, CLAVICLE, RIB, VESSELS = 0.10, 0.22, 0.05, 0.14
NODULE, CONSOLIDATION, PLEURAL_LINE = 0.40, 0.36, 0.12

# Acquisition variation.
MAX_ROTATION_DEG, MAX_ZOOM, MAX_SHIFT = 3.0, 0.04, 0.04
GAIN, OFFSET, GAMMA = (2700.0, 3800.0), (50.0, 400.0), (0.8, 1.25)
MAX_GRADIENT = 0.08  # relative intensity change across the image
QUANTUM_NOISE, READ_NOISE = (0.6, 1.6), (5.0, 25.0)


def _side_sign(side: str) -> float:
    """Image x direction of a patient side: the patient's right is on the image left."""
    return -1.0 if side == "right" else 1.0


def _inside(signed_distance, edge: float):
    """Anti-aliased mask: 1 inside (negative distance), 0 outside, `edge` wide."""
    return 0.5 - 0.5 * np.tanh(signed_distance / edge)


def _ellipse_distance(x, y, center, half_axes):
    """Approximate signed distance to an axis-aligned ellipse (negative inside)."""
    (cx, cy), (a, b) = center, half_axes
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * min(a, b)


def _patient_grid(size: int, body_size: float, rng):
    """Pixel centres in patient units under a random pose; returns x, y and the pixel size."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    image_x, image_y = np.meshgrid(axis, axis)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    zoom = body_size * rng.uniform(1.0 - MAX_ZOOM, 1.0 + MAX_ZOOM)
    shift_x, shift_y = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    cos, sin = np.float32(np.cos(angle) / zoom), np.float32(np.sin(angle) / zoom)
    dx, dy = image_x - np.float32(shift_x), image_y - np.float32(shift_y)
    return cos * dx + sin * dy, cos * dy - sin * dx, 2.0 / (size * zoom)


def _lung_geometry(side: str, scale: float = 1.0):
    """Center and half axes of a lung's ellipse, optionally collapsed by `scale`."""
    sign = _side_sign(side)
    (cx, cy), (ax, ay) = LUNG_CENTER, LUNG_HALF_AXES
    anchor_x, anchor_y = COLLAPSE_ANCHOR
    center = (sign * (anchor_x + (cx - anchor_x) * scale), anchor_y + (cy - anchor_y) * scale)
    return center, (ax * scale, ay * scale)


def _dome(x, side: str):
    """Upper border of a hemidiaphragm: highest medially, lowest at the costophrenic angle."""
    lateral_edge = LUNG_CENTER[0] + LUNG_HALF_AXES[0]
    distance = (_side_sign(side) * x - DOME_PEAK) / (lateral_edge - DOME_PEAK)
    return DOME_TOP[side] + DOME_DROP * distance**2


def _lung_mask(x, y, px: float, side: str):
    """One lung field: its ellipse above the hemidiaphragm."""
    in_ellipse = _inside(_ellipse_distance(x, y, *_lung_geometry(side)), px)
    return in_ellipse * _inside(y - _dome(x, side), px)


def _zone_point(side: str, zone: str, lateral: float, vertical: float):
    """A point inside a lung zone from (medial-to-lateral, top-to-bottom) fractions."""
    (cx, cy), (ax, ay) = LUNG_CENTER, LUNG_HALF_AXES
    top, bottom = ZONE_Y[zone]
    y = top + (bottom - top) * vertical
    half_width = ax * max(1.0 - ((y - cy) / ay) ** 2, 0.0) ** 0.5
    return _side_sign(side) * (cx + half_width * (1.2 * lateral - 0.4)), y


def _anatomy(x, y, px: float, ctr: float, lung_density, fluid):
    """Body, lungs (given their own density and pleural fluid), mediastinum, heart and bones."""
    abs_x = np.abs(x)
    body = np.minimum(
        ((abs_x / 0.94) ** 4 + ((y - 0.25) / 1.15) ** 4) ** 0.25 - 1.0,
        np.maximum(abs_x - 0.2, y + 0.8),  # neck
    )
    density = SOFT_TISSUE * _inside(body, px)
    diaphragm = np.where(x < 0, _dome(x, "right"), _dome(x, "left"))
    density += _inside(diaphragm - y, px) * (ABDOMEN * _inside(body, px) - density)
    lungs = _lung_mask(x, y, px, "right") + _lung_mask(x, y, px, "left")
    density += lungs * (lung_density - density)
    density += fluid * (FLUID - density)

    upper_mediastinum = np.maximum(np.abs(x - 0.01) - 0.1, np.maximum(y - 0.35, -0.95 - y))
    aortic_knob = _ellipse_distance(x, y, (0.1, -0.3), (0.07, 0.07))
    density += _inside(np.minimum(upper_mediastinum, aortic_knob), px) * (MEDIASTINUM - density)
    heart_width = ctr * 2 * THORAX_HALF_WIDTH
    heart_center = ((HEART_LEFTWARD - 0.5) * heart_width, HEART_CENTER_Y)
    heart = _inside(_ellipse_distance(x, y, heart_center, (heart_width / 2, HEART_HALF_HEIGHT)), px)
    density += heart * (HEART - density)

    vertebrae = 0.8 + 0.2 * np.cos(2 * np.pi * y / 0.09)
    density += SPINE * vertebrae * _inside(abs_x - 0.055, px)
    clavicle_y = -0.68 - 0.15 * abs_x + 0.35 * (abs_x - 0.3) ** 2
    along_clavicles = _inside(np.abs(abs_x - 0.35) - 0.27, px)
    density += CLAVICLE * along_clavicles * _inside(np.abs(y - clavicle_y) - 0.022, px)
    # Ribs fade out where they would alias (fewer than ~4 pixels apart).
    rib_visibility = min(max((RIB_SPACING / px - 3.0) / 3.0, 0.0), 1.0)
    rib_phase = 2 * np.pi * (y + 0.5 * abs_x - abs_x**2) / RIB_SPACING  # arching over the lungs
    ribs = np.clip((np.cos(rib_phase) - 0.5) / 0.5, 0.0, 1.0)
    return density + RIB * rib_visibility * ribs * lungs


def _lung_density(x, y, px: float, patient: Patient, rng):
    """Density of the aerated lungs: vessels fanning out of the hila, pneumothorax, opacities."""
    from_hilum_x, from_hilum_y = np.abs(x) - HILUM[0], y - HILUM[1]
    hilum_distance = np.sqrt(from_hilum_x**2 + from_hilum_y**2)
    bearing = np.arctan2(from_hilum_y, from_hilum_x) + 0.12 * waves(rng, x, y, 4, 3.0 * np.pi)
    vessels = np.maximum(np.cos(VESSEL_BRANCHES * bearing), 0.0) ** 4
    density = LUNG + VESSELS * vessels * np.exp(-hilum_distance / 0.3)
    if patient.pneumothorax:
        side, collapse = patient.pneumothorax.side, 1.0 - patient.pneumothorax.size
        collapsed = _ellipse_distance(x, y, *_lung_geometry(side, collapse))
        in_lung = _inside(_ellipse_distance(x, y, *_lung_geometry(side)), px)
        density += in_lung * (1.0 - _inside(collapsed, px)) * (PNEUMOTHORAX_AIR - density)
        density += PLEURAL_LINE * in_lung * np.exp(-((collapsed / (0.8 * px)) ** 2))
    if patient.consolidation:
        cx, cy = _zone_point(patient.consolidation.side, patient.consolidation.zone, 0.6, 0.5)
        envelope = np.exp(-(((x - cx) / 0.17) ** 2 + ((y - cy) / 0.13) ** 2))
        patches = np.clip(0.7 + 0.5 * waves(rng, x, y, 6, 7.0 * np.pi), 0.0, 1.0)
        density += CONSOLIDATION * envelope * patches
    return density


def _effusion(x, y, px: float, effusion: Effusion):
    """Fluid filling the costophrenic angles, its meniscus rising along the lateral wall."""
    sides = SIDES if effusion.side == "bilateral" else (effusion.side,)
    fluid = 0.0
    for side in sides:
        center, half_axes = _lung_geometry(side)
        lateral = np.clip((x - center[0]) / half_axes[0] * _side_sign(side) * 0.5 + 0.5, 0, 1)
        height = EFFUSION_HEIGHT[0] + EFFUSION_HEIGHT[1] * effusion.severity
        surface = DOME_TOP[side] + DOME_DROP - height - MENISCUS_RISE * lateral**2
        in_hemithorax = _inside(_ellipse_distance(x, y, center, half_axes), px)
        fluid = fluid + in_hemithorax * _inside(surface - y, 1.5 * px)
    return fluid


def _nodule(x, y, px: float, nodule: Nodule):
    cx, cy = _zone_point(nodule.side, nodule.zone, *nodule.position)
    radius = max(nodule.size_mm / 2 * 2 * THORAX_HALF_WIDTH / THORAX_WIDTH_MM, px)
    return _inside(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius, 0.7 * px)


def draw_radiograph(patient: Patient, size: int, rng: np.random.Generator) -> np.ndarray:
    """PA chest radiograph phantom: uint16 [size, size] with 12-bit values, air dark."""
    check_size(size)
    # Every draw that does not depend on the findings comes first, so adding or removing a
    # finding changes the image only where the finding is.
    x, y, px = _patient_grid(size, patient.body_size, rng)
    gain, offset, gamma = rng.uniform(*GAIN), rng.uniform(*OFFSET), rng.uniform(*GAMMA)
    tilt_x, tilt_y = rng.uniform(-MAX_GRADIENT, MAX_GRADIENT, 2).tolist()
    quantum, read = rng.uniform(*QUANTUM_NOISE), rng.uniform(*READ_NOISE)
    noise = rng.standard_normal((size, size), dtype=np.float32)

    lung_density = _lung_density(x, y, px, patient, rng)
    fluid = _effusion(x, y, px, patient.effusion) if patient.effusion else 0.0
    density = _anatomy(x, y, px, patient.cardiothoracic_ratio, lung_density, fluid)
    if patient.nodule:
        density += NODULE * _nodule(x, y, px, patient.nodule)

    signal = offset + gain * np.maximum(density, 0.0) ** gamma * (1.0 + tilt_x * x + tilt_y * y)
    signal += noise * np.sqrt(quantum**2 * signal + read**2)
    return np.clip(np.rint(signal), 0, MAX_PIXEL).astype(np.uint16)


def window(image, center: float = 2048.0, width: float = 4096.0) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1), scaled to float32 [0, 1]."""
    if width <= 1.0:
        raise ValueError(f"window width must exceed 1, got {width}")
    scaled = (np.asarray(image, np.float32) - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
