"""The most common layout: files in a folder plus a CSV or JSONL manifest, and its images.

Manifest columns (CSV) or keys (JSONL): `patient_id` (required); `image`, `video`,
`signal`, `audio` (paths relative to the manifest's folder); `report` (inline text); any
`label_<name>` and, in JSONL, a `labels` object; optional `risk`, `age`, `sex`. A
manifest may not point outside its folder: absolute paths and `..` are refused. Other
columns are reported (with the name they likely meant), never silently dropped.
"""

import csv
import dataclasses
import json
import math
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image, ImageOps

from mmjax.data.formats import FormatError, existing_file

PATH_FIELDS = ("image", "video", "signal", "audio")
MODALITY_FIELDS = (*PATH_FIELDS, "report")
LABEL_PREFIX = "label_"
UINT8_MAX = 255  # labels and risk are stored as uint8
SEX_CODES = {"0": 0, "f": 0, "female": 0, "1": 1, "m": 1, "male": 1}  # schema: 0 female, 1 male
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
# PIL modes read as grey, and as 16-bit grey; other modes except I and F are made RGB.
GREY_MODES = ("1", "L", "LA", "La")
GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
GREY16_MAX = 65535
# Refused from the header: 50 megapixels decode to at most 200 MB (RGBA) and are shrunk in
# PIL before any float copy; a 9000x9000 PNG of under 100 KB used to grow ingest by ~1 GB.
MAX_PIXELS = 50_000_000
KNOWN_COLUMNS = ("patient_id", *MODALITY_FIELDS, "labels", "risk", "age", "sex")
# Column names people use for the known ones (lower case, letters and digits only).
SYNONYMS = {
    **dict.fromkeys(("path", "file", "filename", "filepath", "img", "dicom", "xray"), "image"),
    **dict.fromkeys(("ecg", "ekg", "waveform"), "signal"),
    **dict.fromkeys(("echo", "clip", "cine", "movie"), "video"),
    **dict.fromkeys(("sound", "wav", "recording"), "audio"),
    **dict.fromkeys(("text", "findings", "impression", "note", "notes"), "report"),
    **dict.fromkeys(("patient", "patientid", "subjectid"), "patient_id"),
    **dict.fromkeys(("label", "target", "finding", "diagnosis"), "label_<name>"),
    "gender": "sex",
}


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    patient_id: str
    image: str | None = None
    video: str | None = None
    signal: str | None = None
    audio: str | None = None
    report: str | None = None
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    risk: int | None = None
    age: float | None = None
    sex: int | None = None


class _FieldError(Exception):
    """A bad manifest value; `parse_manifest` adds the file and line."""


@dataclasses.dataclass(frozen=True)
class ParsedManifest:
    """A manifest read row by row: one bad row does not cost the others."""

    rows: list[ManifestRow]
    bad_rows: list[FormatError]  # each names the manifest and the line
    ignored: dict[str, str | None]  # unknown column -> the name it likely meant, if any


def read_manifest(path) -> list[ManifestRow]:
    """All rows of a .csv or .jsonl manifest; any bad row fails the manifest, naming its line."""
    parsed = parse_manifest(path)
    if parsed.bad_rows:
        raise parsed.bad_rows[0]
    return parsed.rows


def parse_manifest(path) -> ParsedManifest:
    """The good rows, and a FormatError per bad row; FormatError for a bad file as a whole
    (wrong suffix, unreadable encoding, no `patient_id` column)."""
    path = existing_file(path)
    suffix = Path(path).suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise FormatError(path, f"manifest must be one of {MANIFEST_SUFFIXES}, got {suffix!r}")
    rows, bad_rows, values = [], [], {}
    try:
        for line, record in _csv_records(path) if suffix == ".csv" else _jsonl_records(path):
            try:
                if isinstance(record, _FieldError):
                    raise record
                _note_unknown(record, values)
                rows.append(_row(record))
            except _FieldError as e:
                bad_rows.append(FormatError(path, f"line {line}: {e}"))
    except (UnicodeDecodeError, csv.Error) as e:
        raise FormatError.caused_by(path, "unreadable manifest", e) from e
    return ParsedManifest(rows, bad_rows, {name: _suggestion(name, seen)
                                           for name, seen in values.items()})


def _csv_records(path: str) -> Iterator[tuple[int, dict | _FieldError]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        if "patient_id" not in header:
            raise FormatError(path, "missing column 'patient_id'" + _hints(header))
        if not set(MODALITY_FIELDS) & set(header):
            raise FormatError(path, f"none of the columns {MODALITY_FIELDS}" + _hints(header))
        if len(set(header)) != len(header):
            raise FormatError(path, f"repeated column names in {header}")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield reader.line_num, _FieldError(f"{len(row)} fields, {len(header)} columns")
            else:
                yield reader.line_num, dict(zip(header, row, strict=True))


def _jsonl_records(path: str) -> Iterator[tuple[int, dict | _FieldError]]:
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield line, _FieldError(f"invalid JSON ({e.msg})")
                continue
            if not isinstance(record, dict):
                record = _FieldError("expected a JSON object")
            yield line, record


def _known(column: str) -> bool:
    return column in KNOWN_COLUMNS or column.startswith(LABEL_PREFIX)


def _note_unknown(record: dict, values: dict[str, set]) -> None:
    """Adds the distinct values (a few) of each unknown column in `record` to `values`."""
    for column, value in record.items():
        if not _known(column):
            seen = values.setdefault(column, set())
            if not _blank(value) and len(seen) <= 2:
                seen.add(str(value).strip())


def _suggestion(column: str, seen: set[str] | None = None) -> str | None:
    """The column `column` was likely meant to be: a known name spelt otherwise, a common
    synonym, or `label_<column>` for a column of 0/1 values."""
    key = re.sub(r"[^a-z0-9]", "", column.lower())
    for known in KNOWN_COLUMNS:
        if key == known.replace("_", ""):
            return known
    if key in SYNONYMS:
        return SYNONYMS[key]
    if seen and seen <= {"0", "1"}:
        return LABEL_PREFIX + column
    return None


def _hints(header: list[str]) -> str:
    """' (rename ...)' for the header's unknown columns that have a likely meaning."""
    suggestions = {name: _suggestion(name) for name in header if not _known(name)}
    hints = [f"'{name}' -> '{to}'" for name, to in suggestions.items() if to]
    return f" (rename {', '.join(hints)})" if hints else ""


def _row(record: dict) -> ManifestRow:
    patient_id = _text(record, "patient_id")
    if patient_id is None:
        raise _FieldError("missing patient_id")
    row = ManifestRow(
        patient_id=patient_id,
        **{key: _relative_path(record, key) for key in PATH_FIELDS},
        report=_text(record, "report"),
        labels=_labels(record),
        risk=_uint8(record.get("risk"), "risk"),
        age=_number(record.get("age"), "age"),
        sex=_sex(record.get("sex")),
    )
    if all(getattr(row, key) is None for key in MODALITY_FIELDS):
        raise _FieldError(f"none of {MODALITY_FIELDS}")
    return row


def _blank(value) -> bool:
    return value is None or isinstance(value, str) and not value.strip()


def _text(record: dict, key: str) -> str | None:
    value = record.get(key)
    if isinstance(value, int) and not isinstance(value, bool):  # numeric ids in JSONL
        value = str(value)
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise _FieldError(f"{key} must be text, got {value!r}")
    return value.strip()


def _relative_path(record: dict, key: str) -> str | None:
    """Normalised POSIX path, refused if absolute or climbing out with `..`."""
    value = _text(record, key)
    if value is None:
        return None
    normal = posixpath.normpath(value.replace("\\", "/"))
    if posixpath.isabs(normal) or PureWindowsPath(value).drive or normal.split("/")[0] == "..":
        raise _FieldError(f"{key} path {value!r} leaves the manifest's folder")
    return normal


def _number(value, key: str, integer: bool = False) -> float | int | None:
    if _blank(value):
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
    except ValueError:
        raise _FieldError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or integer and not number.is_integer():
        raise _FieldError(f"{key} must be {'an integer' if integer else 'finite'}, got {value!r}")
    return int(number) if integer else number


def _uint8(value, key: str) -> int | None:
    number = _number(value, key, integer=True)
    if number is not None and not 0 <= number <= UINT8_MAX:
        raise _FieldError(
            f"{key} = {number} is outside 0..{UINT8_MAX} (map uncertain labels first)"
        )
    return number


def _labels(record: dict) -> dict[str, int]:
    """`label_<name>` columns and a JSONL `labels` object; blank values are left out."""
    nested = record.get("labels") or {}
    if not isinstance(nested, dict):
        raise _FieldError(f"labels must be an object, got {nested!r}")
    flat = {
        key[len(LABEL_PREFIX) :]: v for key, v in record.items() if key.startswith(LABEL_PREFIX)
    }
    labels = {name: _uint8(value, LABEL_PREFIX + name) for name, value in (nested | flat).items()}
    return {name: value for name, value in labels.items() if value is not None}


def _sex(value) -> int | None:
    if _blank(value):
        return None
    code = None if isinstance(value, bool) else SEX_CODES.get(str(value).strip().lower())
    if code is None:
        raise _FieldError(f"sex must be one of {sorted(SEX_CODES)}, got {value!r}")
    return code


def read_image(path, size: int | None = None) -> np.ndarray:
    """float32 [H, W] (grey) or [H, W, 3] (colour) in [0, 1].

    16-bit grey is scaled by 65535; alpha is dropped and palettes expanded; the EXIF
    orientation (photographs) is applied; multi-frame files give their first frame.
    Images over MAX_PIXELS are refused from their header, before decoding (a small PNG
    can hold a huge image); with `size`, the image is shrunk in PIL by a whole factor
    that keeps its long side at least `size`, so no full-size float copy is made.
    """
    path = existing_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise FormatError(path, f"image is {width}x{height} pixels, over the "
                                        f"limit of {MAX_PIXELS / 1e6:g} megapixels")
            factor = max(width, height) // size if size else 1
            if factor > 1:
                image.draft(image.mode, (width // factor, height // factor))  # JPEG only
            image.load()  # decodes now: truncated files raise here, not later
            ImageOps.exif_transpose(image, in_place=True)
            target = ("L" if image.mode in GREY_MODES
                      else "I" if image.mode in GREY16_MODES and factor > 1  # no I;16 reduce
                      else image.mode if image.mode in (*GREY16_MODES, "I", "F") else "RGB")
            if image.mode != target:  # convert copies even to the same mode
                image = image.convert(target)
            factor = max(image.size) // size if size else 1  # what the draft left
            if factor > 1:
                image = image.reduce(factor)
            mode, array = image.mode, np.asarray(image)
    except FormatError:
        raise
    except Exception as e:
        raise FormatError.caused_by(path, "unreadable image", e) from e
    if mode in ("L", "RGB"):
        return array.astype(np.float32) / 255
    if mode == "F":
        raise FormatError(path, "floating-point images have no known display range")
    if array.min(initial=0) < 0 or array.max(initial=0) > GREY16_MAX:
        raise FormatError(path, f"PIL mode {mode} holds values outside 16-bit grey")
    return array.astype(np.float32) / GREY16_MAX
