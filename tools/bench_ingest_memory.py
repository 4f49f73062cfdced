"""Peak memory of ingesting one long video: `python tools/bench_ingest_memory.py`.

Writes an MP4 of `--frames` frames of `--size` pixels with PyAV, then reads it in fresh
processes and prints each one's peak RSS: the imports alone, `read_video` keeping every
frame, `read_video` keeping the 16 that ingest samples, and ingest's whole per-file step
(`_file_item`: frames and audio).
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

CASES = {
    "imports only": "",
    "read_video, every frame kept": "video.read_video(path)",
    "read_video, 16 frames kept": "video.read_video(path, 16)",
    "ingest _file_item (16 frames)": "ingest._file_item(Path(path), ingest.Shapes())",
}


def write_clip(path: Path, frames: int, size: int):
    """A bright square moving over a dark background: small to store, like an echo loop."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.full((size, size, 3), 20, np.uint8)
            x = (3 * t) % (size - 16)
            image[size // 3 : size // 3 + 16, x : x + 16] = 230
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def peak_mib(statement: str, path: Path) -> float:
    """Peak RSS of a fresh process that imports the readers and runs `statement`: its
    VmHWM, as ru_maxrss would include the parent's RSS at the fork."""
    code = (
        "from pathlib import Path\n"
        "from mmjax.data import ingest\n"
        "from mmjax.data.formats import video\n"
        f"path = {str(path)!r}\n"
        f"{statement}\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"  # KiB
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.mp4"
        write_clip(path, args.frames, args.size)
        print(f"{path.name}: {args.frames} frames of {args.size}x{args.size}, "
              f"{path.stat().st_size / 2**20:.2f} MiB")
        for name, statement in CASES.items():
            print(f"{name:32s} peak RSS {peak_mib(statement, path):8.1f} MiB")


if __name__ == "__main__":
    main()
