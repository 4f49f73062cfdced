"""Drawing helpers shared by the radiograph and the echo: the size check, smooth random fields."""

import numpy as np

MIN_IMAGE_SIZE = 16


def check_size(size: int) -> None:
    """Refuses an image side below MIN_IMAGE_SIZE."""
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} is below the minimum of {MIN_IMAGE_SIZE}")


def waves(rng, x, y, count: int, frequency: float):
    """Smooth random field with unit variance: plane waves in random directions."""
    angles = rng.uniform(0.0, 2 * np.pi, count)
    wave_x, wave_y = frequency * rng.uniform(0.7, 1.3, count) * [np.cos(angles), np.sin(angles)]
    phases = rng.uniform(0.0, 2 * np.pi, count)
    field = sum(
        np.cos(fx * x + fy * y + p)
        for fx, fy, p in zip(wave_x.tolist(), wave_y.tolist(), phases.tolist(), strict=True)
    )
    return field * np.sqrt(2.0 / count).item()
