"""Video files (MP4, AVI, ...) -> RGB frames, decoded with PyAV (FFmpeg).

A clip that fails to decode part-way raises rather than returning the frames before
the damage: a silently shortened clip would be sampled as if it were whole. Frames
past `max_frames` are never decoded, so damage after them goes unnoticed.
"""

import dataclasses

import av
import numpy as np

from mmjax.data.formats import FormatError, existing_file


@dataclasses.dataclass(frozen=True, eq=False)
class VideoItem:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float


def read_video(path, max_frames: int | None = None) -> VideoItem:
    """The first video stream's frames (up to `max_frames`) and its average frame rate."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    path = existing_file(path)
    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise FormatError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == max_frames:
                    break
    except FormatError:
        raise
    except Exception as e:  # FFmpeg errors, and IndexError from PyAV on some cut MP4s
        what = f"corrupt video after {len(frames)} frames" if frames else "unreadable video"
        raise FormatError.caused_by(path, what, e) from e
    if not frames:
        raise FormatError(path, "no frames decoded")
    if len({frame.shape for frame in frames}) > 1:
        raise FormatError(path, "frame size changes within the clip")
    if not rate or rate <= 0:
        raise FormatError(path, "unknown frame rate")
    return VideoItem(np.stack(frames), float(rate))
