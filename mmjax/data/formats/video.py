"""Video files (MP4, AVI, ...) -> RGB frames, decoded with PyAV (FFmpeg).

Memory is bounded by what is kept, not by the clip's length: `read_video(path, frames)`
keeps only the frames `convert.frame_indices` samples, chosen from the frame count the
container states (or, where it states none, a count of packets, which reads no pixels).
Every frame is still decoded, so a clip that fails to decode part-way raises rather than
returning the frames before the damage, and a stated count that proves wrong is
corrected by decoding again over the real count. A frame size over `MAX_FRAME_PIXELS`,
or a frame rate outside `convert.FRAME_RATE_FPS`, is refused before decoding.
"""

import contextlib
import dataclasses
from collections.abc import Callable

import av
import numpy as np

from mmjax.data.formats import FormatError, convert, existing_file

# Pixels in one frame (4096 x 4096): 16 kept RGB frames are then at most 805 MB.
MAX_FRAME_PIXELS = 4096 * 4096


@dataclasses.dataclass(frozen=True, eq=False)
class VideoItem:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float


def read_video(path, frames: int | None = None) -> VideoItem:
    """The first video stream's average frame rate and its frames: all of them, or `frames`
    sampled uniformly over the clip (every frame of a clip with no more than that)."""
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be positive, got {frames}")
    path = existing_file(path)
    count, fps = _probe(path, counted=frames is not None)
    for _ in range(2):  # a wrong stated count costs one more decode
        wanted = _sampled(count, frames)
        kept, decoded = _decode(path, wanted)
        if _sampled(decoded, frames) == wanted:
            return VideoItem(np.stack(kept), fps)
        count = decoded
    raise FormatError(path, f"decoded {count} frames, then {decoded}")


def _sampled(count: int, frames: int | None) -> set[int] | None:
    """Indices `frames` samples of a `count`-frame clip; None (all) without `frames`."""
    if frames is None:
        return None
    return set(convert.frame_indices(count, min(count, frames)).tolist())


def _probe(path: str, counted: bool) -> tuple[int, float]:
    """The frame count (0 when not `counted`) and frame rate, the frame size checked."""
    with _opened(path) as container:
        if not container.streams.video:
            raise FormatError(path, "no video stream")
        stream = container.streams.video[0]
        _check_size(path, stream.width, stream.height)
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise FormatError(path, "unknown frame rate")
        fps = convert.check_rate(path, float(rate), convert.FRAME_RATE_FPS, "frame rate (fps)")
        count = stream.frames if counted else 0
        if counted and not count:  # not stated: count packets (the final flush one is empty)
            count = sum(1 for packet in container.demux(stream) if packet.size)
    return count, fps


def _decode(path: str, wanted: set[int] | None) -> tuple[list[np.ndarray], int]:
    """Frames at the `wanted` indices (all if None) and how many frames were decoded."""
    kept, decoded, size = [], 0, None
    with _opened(path, lambda: decoded) as container:
        for frame in container.decode(container.streams.video[0]):
            if size is None:
                size = _check_size(path, frame.width, frame.height)
            elif (frame.width, frame.height) != size:
                raise FormatError(path, "frame size changes within the clip")
            if wanted is None or decoded in wanted:
                kept.append(frame.to_ndarray(format="rgb24"))
            decoded += 1
    if not decoded:
        raise FormatError(path, "no frames decoded")
    return kept, decoded


@contextlib.contextmanager
def _opened(path: str, decoded: Callable[[], int] = lambda: 0):
    """The open container; FFmpeg's errors (and PyAV's IndexError on some cut MP4s) as
    FormatError, saying how many frames `decoded` had returned before."""
    try:
        with av.open(path) as container:
            yield container
    except FormatError:
        raise
    except Exception as e:
        done = decoded()
        what = f"corrupt video after {done} frames" if done else "unreadable video"
        raise FormatError.caused_by(path, what, e) from e


def _check_size(path: str, width: int, height: int) -> tuple[int, int]:
    if width * height > MAX_FRAME_PIXELS:
        raise FormatError(
            path, f"frame size {width} x {height} is over the budget of {MAX_FRAME_PIXELS} pixels"
        )
    return width, height
