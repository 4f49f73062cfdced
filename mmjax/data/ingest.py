"""Raw clinical files -> a sharded dataset, counting every file it could not use.

Sources: a CSV/JSONL manifest (image folder + reports + labels, what most users have),
whose columns decide what each file must be, or a folder of DICOM (grouped into one
record per study), video and ECG files, read by suffix. A bad file or manifest row is
logged with its reason in `ingest_report.json` and the rest goes on; a bad manifest as a
whole or a bad flag is one ConfigError. No file outside the source folder is read, even
through a symlink. The held-out split is chosen per patient by a hash, so no patient
spans both splits.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from tqdm import tqdm  # disable=None: a progress bar on a terminal only, not in logs

from mmjax.config import ConfigError
from mmjax.data import schema, shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.formats import (
    SOURCE_FORMATS,
    FormatError,
    audio,
    convert,
    dicom,
    ecg,
    tabular,
    video,
)

log = logging.getLogger(__name__)

REPORT = "ingest_report.json"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
ECG_SUFFIXES = (".hea", ".npy", ".csv")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", "")
# What a manifest column's file must be: its suffixes, and the words for an error.
COLUMN_SUFFIXES = {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES, "signal": ECG_SUFFIXES,
                   "audio": AUDIO_SUFFIXES}
COLUMN_KINDS = {
    "image": "an image (PNG/JPEG/TIFF/BMP or a single-frame DICOM image)",
    "video": "a video (MP4/AVI/MOV/MKV/WebM or a multi-frame DICOM)",
    "signal": "an ECG (.hea/.npy/.csv or a DICOM waveform)",
    "audio": "audio (WAV/FLAC/OGG/MP3/M4A)",
}
TARGETS = {"risk": np.uint8, "age": np.float32, "sex": np.uint8}  # dtypes as in schema.FIELDS
GREYED = "converted_to_grey"  # an item key, counted by Tally.take and never stored
COLOUR_TOLERANCE = 2 / 255  # JPEG rounding leaves grey photographs a level or two off grey


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The fixed shapes every ingested example is converted to."""

    image_size: int = 64
    channels: int = 1
    frames: int = 16
    signal_rate_hz: int = 100
    signal_seconds: float = 10.0
    audio_rate_hz: int = 2000  # heart and lung sounds; speech would want 16000
    audio_seconds: float = 5.0

    @property
    def signal_samples(self) -> int:
        return int(round(self.signal_rate_hz * self.signal_seconds))

    @property
    def audio_samples(self) -> int:
        return int(round(self.audio_rate_hz * self.audio_seconds))

    def fields(self, modalities, num_labels: int, targets=()) -> dict[str, tuple]:
        fields = {"patient_id": (), **schema.modality_shapes(
            modalities, self.image_size, self.channels, self.frames, self.signal_samples,
            self.audio_samples)}
        if num_labels:
            fields["labels"] = (num_labels,)
        fields.update({target: () for target in targets})
        return fields


@dataclasses.dataclass
class Tally:
    """What happened to every input file and manifest row."""

    files: int = 0
    records: int = 0
    rows_refused: int = 0  # manifest rows refused before any of their files was read
    converted_to_grey: int = 0  # colour images stored grey (--channels 1)
    errors: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    ignored_columns: dict = dataclasses.field(default_factory=dict)

    def error(self, error: FormatError) -> None:
        log.warning("skipping %s", error)
        self.errors.append({"path": str(error.path), "reason": error.reason})

    def refuse_row(self, error: FormatError) -> None:
        self.rows_refused += 1
        self.error(error)

    def take(self, item: dict) -> dict:
        """`item` without its GREYED flag, which is counted."""
        self.converted_to_grey += bool(item.pop(GREYED, False))
        return item

    @property
    def error_fraction(self) -> float:
        return len(self.errors) / max(self.files + self.rows_refused, 1)


# ---- One modality at a time, each to its stored form.


def _image(pixels01: np.ndarray, shapes: Shapes) -> dict:
    """Flagged GREYED when colour is lost, so the report counts it."""
    item = {"image": convert.to_stored_image(pixels01, shapes.image_size, shapes.channels)}
    if shapes.channels == 1 and pixels01.ndim == 3 and (
            np.ptp(pixels01, axis=-1).max(initial=0) > COLOUR_TOLERANCE):
        item[GREYED] = True
    return item


def _video(frames: np.ndarray, shapes: Shapes) -> dict:
    """A longer clip is sampled uniformly to `frames`; a shorter one keeps its frames, zero
    padded, with its real length stored so frame encoders can mask the padding."""
    kept = min(len(frames), shapes.frames)
    sampled = convert.sample_frames(frames, kept, shapes.image_size, shapes.channels)
    padded = np.zeros((shapes.frames, *sampled.shape[1:]), np.uint8)
    padded[:kept] = sampled
    return {"video": padded, "video_length": np.uint16(kept)}


def _audio(path: Path, shapes: Shapes) -> dict:
    """Nothing for a video without an audio track: its audio is absent, not bad."""
    item = audio.read_audio(path, shapes.audio_rate_hz)
    if item is None:
        return {}
    samples, length = audio.fit_length(item.samples, shapes.audio_samples)
    return {"audio": samples.astype(np.float16), "audio_length": np.int32(length)}


def _signal(signal: np.ndarray, rate_hz: float, lead_names, shapes: Shapes, path) -> dict:
    """Checked again once resampled: the filter overshoots steps, so a sample the reader
    passed just under float16's limit could be stored as Inf."""
    resampled = convert.resample_signal(signal, rate_hz, shapes.signal_rate_hz,
                                        shapes.signal_seconds)
    placed, mask = convert.place_leads(resampled, lead_names, path=str(path))
    convert.check_samples(str(path), placed, "millivolt samples after resampling")
    return {"signal": placed.astype(np.float16), "signal_leads": mask}


def _file_item(path: Path, shapes: Shapes) -> dict:
    """A non-DICOM file by its suffix."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        frames = video.read_video(path, shapes.frames).frames  # only the sampled frames
        return {**_video(frames, shapes), **_audio(path, shapes)}
    if suffix in AUDIO_SUFFIXES:
        return _audio(path, shapes)
    if suffix in ECG_SUFFIXES:
        item = ecg.read_ecg(path)
        return _signal(item.signal, item.rate_hz, item.lead_names, shapes, path)
    if suffix in IMAGE_SUFFIXES:
        return _image(tabular.read_image(path, shapes.image_size), shapes)
    raise FormatError(path, f"unsupported file type '{suffix}'")


def _dicom_item(path: Path, shapes: Shapes) -> dict:
    item = dicom.read_dicom(path, shapes.frames)  # of a multi-frame file, only those sampled
    if item.kind == "image":
        return _image(item.display01(), shapes)
    if item.kind == "video":
        return _video(item.frames, shapes)
    if item.kind == "signal":
        return _signal(item.signal, item.rate_hz, item.lead_names, shapes, path)
    return {"report": item.text}


# ---- Sources.


def _column_item(column: str, path: Path, shapes: Shapes) -> dict:
    """A manifest file read as its column says: a WAV in `image` is an error, not audio."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES and column != "audio":
        item = _dicom_item(path, shapes)
        if column not in item:
            kind = next(m for m in schema.MODALITIES if m in item)
            raise FormatError(path, f"column '{column}' holds a DICOM {kind}, not "
                                    f"{COLUMN_KINDS[column]}")
        return item
    if suffix not in COLUMN_SUFFIXES[column]:
        raise FormatError(path, f"column '{column}' takes {COLUMN_KINDS[column]}, "
                                f"not {path.name!r}")
    return _file_item(path, shapes)


def _inside(root: str, path: Path) -> Path:
    """`path`, refused if it resolves (symlinks followed) outside `root`, a realpath."""
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise FormatError(path, f"resolves to {real}, outside {root}")
    return path


def _from_manifest(manifest: Path, parsed: tabular.ParsedManifest, shapes: Shapes,
                   tally: Tally) -> Iterator[dict]:
    """One record per good row; a row with a bad file is counted and left out."""
    for error in parsed.bad_rows:
        tally.refuse_row(error)
    tally.ignored_columns = parsed.ignored
    root = os.path.realpath(manifest.parent)
    for row in tqdm(parsed.rows, desc="ingest", unit="row", disable=None):
        record = {"patient_id": row.patient_id, "labels": row.labels,
                  **{t: dtype(getattr(row, t)) for t, dtype in TARGETS.items()
                     if getattr(row, t) is not None}}
        try:
            for column in tabular.PATH_FIELDS:  # audio last: its column wins over a track
                relative = getattr(row, column)
                if relative:
                    tally.files += 1
                    path = _inside(root, manifest.parent / relative)
                    record.update(tally.take(_column_item(column, path, shapes)))
        except FormatError as e:
            tally.error(e)
            continue
        if row.report:
            record["report"] = row.report
        yield record


def _study_key(path: Path) -> tuple[str, str]:
    header = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["PatientID", "StudyInstanceUID"])
    patient = str(header.get("PatientID", "") or path.stem)
    return patient, str(header.get("StudyInstanceUID", "") or path.stem)


def _from_folder(root: Path, kind: str, shapes: Shapes, tally: Tally) -> Iterator[dict]:
    """DICOM files become one record per study; other files one record each."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and _wanted(p, kind))
    real_root = os.path.realpath(root)
    studies: dict[tuple[str, str], dict] = {}
    for path in tqdm(files, desc="ingest", unit="file", disable=None):
        tally.files += 1
        is_dicom = path.suffix.lower() == ".dcm" or kind == "dicom"
        try:
            _inside(real_root, path)
            item = _dicom_item(path, shapes) if is_dicom else _file_item(path, shapes)
            key = _study_key(path) if is_dicom else (path.stem, path.stem)
        except FormatError as e:
            tally.error(e)
            continue
        except (OSError, pydicom.errors.InvalidDicomError) as e:
            tally.error(FormatError(path, f"unreadable header ({e})"))
            continue
        record = studies.setdefault(key, {"patient_id": key[0]})
        clash = set(item) & set(record) - {"patient_id"}
        if clash:
            tally.skipped.append({"path": str(path),
                                  "reason": f"study already has {sorted(clash)[0]}"})
            continue
        record.update(tally.take(item))
    yield from studies.values()


def _wanted(path: Path, kind: str) -> bool:
    suffix = path.suffix.lower()
    if kind == "dicom":
        return suffix in (".dcm", "")
    if kind == "video":
        return suffix in VIDEO_SUFFIXES
    if kind == "ecg":
        return suffix in ECG_SUFFIXES
    if kind == "audio":
        return suffix in AUDIO_SUFFIXES
    return suffix in (".dcm", *VIDEO_SUFFIXES, *ECG_SUFFIXES, *IMAGE_SUFFIXES, *AUDIO_SUFFIXES)


# ---- The whole ingest.


def held_out(patient_id: str, eval_fraction: float) -> bool:
    """Stable per-patient split: the same patient lands in the same split every time."""
    digest = hashlib.sha256(patient_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def _read_source(src: Path, source_format: str, shapes: Shapes, tally: Tally) -> list[dict]:
    """Every record of `src`, a manifest or a folder; `tally` counts its files and errors."""
    if source_format not in SOURCE_FORMATS:
        raise ConfigError(f"--format '{source_format}' is unknown; choose from {SOURCE_FORMATS}")
    if not src.exists():
        raise FileNotFoundError(f"source not found: {src}")
    is_manifest = src.is_file() and src.suffix.lower() in tabular.MANIFEST_SUFFIXES
    if source_format == "manifest" or (source_format == "auto" and is_manifest):
        try:
            parsed = tabular.parse_manifest(src)
        except FormatError as e:  # the manifest as a whole: nothing to count and go on with
            raise ConfigError(f"manifest {e}") from None
        records = list(_from_manifest(src, parsed, shapes, tally))
    elif src.is_dir():
        records = list(_from_folder(src, source_format, shapes, tally))
    else:
        raise ConfigError(f"{src} is neither a folder nor a manifest "
                          f"({', '.join(tabular.MANIFEST_SUFFIXES)})")
    tally.records = len(records)
    return records


def _split(records: list[dict], label_names: list[str], eval_fraction: float) -> dict:
    """Records into train and eval by patient, their label dicts as vectors over `label_names`."""
    splits = {"train": [], "eval": []}
    for record in records:
        labels = record.pop("labels", None)
        if label_names:
            record["labels"] = np.array([int(bool((labels or {}).get(n, 0))) for n in label_names],
                                        np.uint8)
        split = "eval" if held_out(record["patient_id"], eval_fraction) else "train"
        splits[split].append(record)
    return splits


def ingest(
    src: str | Path,
    out: str | Path,
    source_format: str = "auto",
    shapes: Shapes = Shapes(),
    eval_fraction: float = 0.1,
    max_errors: float = 0.05,
    vocab_size: int = 1024,
) -> dict:
    """Ingests `src` into the dataset folder `out`; returns the ingest report.

    Raises ConfigError for flags out of range, before reading anything, and when more
    than `max_errors` of the files and manifest rows failed or none made a record (the
    dataset and its report are still written, so the failures can be inspected).
    """
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    if not 0 <= max_errors <= 1:
        raise ConfigError(f"--max-errors must be in [0, 1], got {max_errors}")
    src, out = Path(src), Path(out)
    tally = Tally()
    records = _read_source(src, source_format, shapes, tally)
    label_names = sorted({name for r in records for name in r.get("labels", {})})
    modalities = [m for m in schema.MODALITIES if any(m in r for r in records)]
    targets = [t for t in TARGETS if any(t in r for r in records)]
    splits = _split(records, label_names, eval_fraction)
    reports = [r["report"] for r in splits["train"] if "report" in r]

    out.mkdir(parents=True, exist_ok=True)
    shards.write_dataset(
        out, src.stem or "ingested", splits, shapes.fields(modalities, len(label_names), targets),
        label_names,
        {"source": str(src), **dataclasses.asdict(shapes)},
        before_manifest=lambda directory: tokenizer_lib.save_for_dataset(
            directory, reports, vocab_size),
    )
    report = {
        "source": str(src), "files": tally.files, "records": tally.records,
        "splits": {name: len(rows) for name, rows in splits.items()},
        "modalities": modalities, "label_names": label_names,
        "targets": targets, "rows_refused": tally.rows_refused,
        "ignored_columns": tally.ignored_columns, "converted_to_grey": tally.converted_to_grey,
        "error_fraction": tally.error_fraction, "errors": tally.errors,
        "skipped": tally.skipped,
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    _warn(tally, modalities)
    if tally.error_fraction > max_errors:
        what = "files and manifest rows" if tally.rows_refused else "files"
        raise ConfigError(
            f"{len(tally.errors)} of {tally.files + tally.rows_refused} {what} failed "
            f"({tally.error_fraction:.1%} > --max-errors {max_errors:.1%}); see {out / REPORT}"
        )
    if not tally.records:
        raise ConfigError(f"no records in {src}; see {out / REPORT}")
    return report


def _warn(tally: Tally, modalities) -> None:
    """One warning each for what the user likely did not mean: ignored columns, lost colour."""
    if tally.ignored_columns:
        named = ", ".join(f"'{c}'" + (f" (rename it '{to}'?)" if to else "")
                          for c, to in tally.ignored_columns.items())
        no_files = not set(modalities) & set(tabular.PATH_FIELDS)
        log.warning("ignored manifest columns %s%s", named,
                    "; the dataset has no image, video, signal or audio" if no_files else "")
    if tally.converted_to_grey:
        log.warning("%d colour images were stored grey (--channels 1); pass --channels 3 to "
                    "keep colour", tally.converted_to_grey)
