"""Peak memory of ingesting large inputs: `python tools/bench_ingest_memory.py`.

Writes an MP4 of `--frames` frames of `--size` pixels with PyAV, a multi-frame DICOM
(`--dicom-frames` 16-bit frames of `--dicom-size` pixels) and a single-frame DICOM of
`--image-size` pixels, then reads each in fresh processes and prints each one's peak RSS:
the imports alone, the reader keeping every frame, the reader keeping the 16 that ingest
samples, and ingest's whole per-file step (`_file_item` or `_dicom_item`). A file the
reader refuses prints its reason instead.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

CASES = {
    "video": {
        "imports only": "",
        "read_video, every frame kept": "video.read_video(path)",
        "read_video, 16 frames kept": "video.read_video(path, 16)",
        "ingest _file_item (16 frames)": "ingest._file_item(Path(path), ingest.Shapes())",
    },
    "dicom video": {
        "read_dicom, every frame kept": "dicom.read_dicom(path)",
        "read_dicom, 16 frames kept": "dicom.read_dicom(path, 16)",
        "ingest _dicom_item (16 frames)": "ingest._dicom_item(Path(path), ingest.Shapes())",
    },
    "dicom image": {
        "read_dicom": "dicom.read_dicom(path)",
        "ingest _dicom_item": "ingest._dicom_item(Path(path), ingest.Shapes())",
    },
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


def write_dicom(path: Path, frames: int, size: int):
    """Uncompressed 12-of-16-bit grey noise without a window, so the reader computes one
    from percentiles and rescales every value (slope and intercept as in CT)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "OT", "MONOCHROME2", 1
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    if frames > 1:
        ds.NumberOfFrames, ds.FrameTime = frames, "33.3"
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 4096, (frames, size, size), "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def peak(statement: str, path: Path) -> str:
    """Peak RSS of a fresh process that imports the readers and runs `statement`: its
    VmHWM, as ru_maxrss would include the parent's RSS at the fork."""
    code = (
        "from pathlib import Path\n"
        "from mmjax.data import ingest\n"
        "from mmjax.data.formats import FormatError, dicom, video\n"
        f"path = {str(path)!r}\n"
        "try:\n"
        f"    {statement or 'pass'}\n"
        "except FormatError as e:\n"
        "    print('refused:', e.reason)\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"  # KiB
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    *refused, kib = done.stdout.splitlines()
    return f"peak RSS {int(kib) / 1024:8.1f} MiB" + "".join(f"  ({line})" for line in refused)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--dicom-frames", type=int, default=200)
    parser.add_argument("--dicom-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=8000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = {"video": Path(folder) / "long.mp4", "dicom video": Path(folder) / "cine.dcm",
                 "dicom image": Path(folder) / "image.dcm"}
        write_clip(paths["video"], args.frames, args.size)
        write_dicom(paths["dicom video"], args.dicom_frames, args.dicom_size)
        write_dicom(paths["dicom image"], 1, args.image_size)
        shapes = {"video": f"{args.frames} frames of {args.size}x{args.size}",
                  "dicom video": f"{args.dicom_frames} frames of {args.dicom_size}x"
                                 f"{args.dicom_size}, 16 bits",
                  "dicom image": f"{args.image_size}x{args.image_size}, 16 bits"}
        for kind, cases in CASES.items():
            path = paths[kind]
            print(f"{path.name}: {shapes[kind]}, {path.stat().st_size / 2**20:.2f} MiB")
            for name, statement in cases.items():
                print(f"  {name:32s} {peak(statement, path)}")


if __name__ == "__main__":
    main()
