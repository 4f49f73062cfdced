"""Sharded datasets on disk: array_record files of msgpack records plus manifest.json.

Records are msgpack maps of strings, numbers and typed arrays; decoding never runs
code (no pickle) and accepts only plain numeric dtypes. The manifest fixes the schema
version, every field's dtype and shape, the splits and each shard's record count and
SHA-256, so a reader can refuse a dataset it would otherwise misread.
"""

import dataclasses
import hashlib
import json
import math
import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from mmjax import storage
from mmjax.data import schema

MANIFEST = "manifest.json"
# The most one example's fields may take as the manifest declares them: a larger shape is
# a damaged or hostile manifest, refused before the pipeline allocates an array of it.
MAX_EXAMPLE_BYTES = 1 << 30
_ND_KEY = "__ndarray__"
_ALLOWED_DTYPES = frozenset(
    ["bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32",
     "float64"]
)


class DatasetError(ValueError):
    """A dataset that cannot be read as it claims to be; the message names the file."""


# ---- Records.


def _pack(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {_ND_KEY: True, "dtype": value.dtype.name, "shape": list(value.shape),
                "data": np.ascontiguousarray(value).tobytes()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_record(example: dict[str, Any]) -> bytes:
    return msgpack.packb({k: _pack(v) for k, v in example.items()}, use_bin_type=True)


def _unpack(value: Any) -> Any:
    if not (isinstance(value, dict) and value.get(_ND_KEY)):
        return value
    dtype, shape, data = value["dtype"], tuple(value["shape"]), value["data"]
    if dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed")
    array = np.frombuffer(data, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{len(data)} bytes do not fill shape {shape} of {dtype}")
    return array.reshape(shape)


def decode_record(data: bytes, where: str) -> dict[str, Any]:
    """Decodes one record; any malformation raises DatasetError naming `where`."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if not isinstance(raw, dict):
            raise ValueError("record is not a map")
        return {str(k): _unpack(v) for k, v in raw.items()}
    except (ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise DatasetError(f"{where}: corrupt record ({e})") from e


# ---- Manifest.


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset folder
    num_records: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    fields: dict[str, dict]  # field -> {"dtype": str, "shape": [int, ...]}
    label_names: list[str]
    splits: dict[str, list[ShardInfo]]
    attributes: dict[str, Any]  # e.g. signal_rate_hz, seed, generator
    schema_version: int = schema.SCHEMA_VERSION

    def num_records(self, split: str) -> int:
        return sum(shard.num_records for shard in self.split(split))

    def split(self, split: str) -> list[ShardInfo]:
        if split not in self.splits:
            raise DatasetError(
                f"split '{split}' is not in the dataset (has {', '.join(sorted(self.splits))})"
            )
        return self.splits[split]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def field_specs(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict]:
    """Manifest field entries from concrete shapes, dtypes taken from the schema."""
    unknown = set(shapes) - set(schema.FIELDS)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not in the schema")
    return {name: {"dtype": schema.FIELDS[name][0], "shape": list(shape)}
            for name, shape in shapes.items()}


def read_manifest(directory: str | Path) -> Manifest:
    path = storage.path(directory) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found (is {directory} a mmjax dataset?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: malformed manifest ({e!r})") from e
    manifest = _manifest_from(data, path)
    for name, spec in manifest.fields.items():
        dtype, template = schema.FIELDS.get(name, (None, ()))
        if spec["dtype"] != dtype or len(spec["shape"]) != len(template):
            raise DatasetError(f"{path}: field '{name}' with {spec} does not match the schema")
    _check_example_size(manifest.fields, path)
    for shards in manifest.splits.values():
        for shard in shards:
            _inside(storage.path(directory), shard.path, path)
    return manifest


def _manifest_from(data: Any, path: Path) -> Manifest:
    """The manifest `data` describes, every value's type checked: a hand-edited or damaged
    manifest is a DatasetError naming the key, never a wrong read later."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise DatasetError(f"{path}: malformed manifest: {what}")

    def is_count(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    need(isinstance(data, dict), "not a JSON object")
    version = data.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema version {version} is not supported "
                           f"(this mmjax reads version {schema.SCHEMA_VERSION})")
    need(isinstance(data.get("name"), str), "'name' must be a string")
    fields = data.get("fields")
    need(isinstance(fields, dict), "'fields' must map names to {dtype, shape}")
    for name, spec in fields.items():
        need(isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
             and isinstance(spec.get("shape"), list) and all(map(is_count, spec["shape"])),
             f"field '{name}' must be {{dtype, shape}} with sizes >= 0, got {spec!r}")
    labels = data.get("label_names")
    need(isinstance(labels, list) and all(isinstance(x, str) for x in labels),
         "'label_names' must be a list of strings")
    attributes = data.get("attributes", {})
    need(isinstance(attributes, dict), "'attributes' must be an object")
    splits = data.get("splits")
    need(isinstance(splits, dict), "'splits' must be an object")
    for split, shards in splits.items():
        need(isinstance(shards, list) and all(
            isinstance(s, dict) and set(s) == {"path", "num_records", "sha256"}
            and isinstance(s["path"], str) and is_count(s["num_records"])
            and isinstance(s["sha256"], str) for s in shards),
            f"split '{split}' must list shards of {{path, num_records, sha256}}")
    return Manifest(name=data["name"], fields=fields, label_names=labels,
                    splits={k: [ShardInfo(**s) for s in v] for k, v in splits.items()},
                    attributes=attributes, schema_version=version)


def _check_example_size(fields: dict[str, dict], path) -> None:
    """Refuses shapes whose example would exceed MAX_EXAMPLE_BYTES, naming the largest."""
    sizes = {name: math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize
             for name, spec in fields.items() if spec["dtype"] != "str"}
    if sum(sizes.values()) > MAX_EXAMPLE_BYTES:
        name = max(sizes, key=sizes.get)
        raise DatasetError(
            f"{path}: field '{name}' of shape {fields[name]['shape']} takes {sizes[name]:,} "
            f"bytes per example ({sum(sizes.values()):,} for all fields), over the "
            f"{MAX_EXAMPLE_BYTES:,} an example may take; the manifest is damaged")


def _inside(root, relative: str, manifest_path) -> Path:
    """Resolves a shard path, refusing any that leaves the dataset folder (by `..`, an
    absolute path or, locally, a symlink)."""
    normal = posixpath.normpath(relative)
    if storage.is_bucket(root):
        resolved, leaves = root / normal, normal.startswith(("/", "../")) or normal == ".."
    else:
        resolved = (root / relative).resolve()
        leaves = Path(relative).is_absolute() or not resolved.is_relative_to(root.resolve())
    if leaves or normal == ".":
        raise DatasetError(f"{manifest_path}: shard path '{relative}' leaves the dataset folder")
    return resolved


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- Writing.


class SplitWriter:
    """Writes one split's records into shards of at most `records_per_shard`."""

    def __init__(self, directory: str | Path, split: str, records_per_shard: int = 1000):
        self.directory, self.split = Path(directory), split
        self.records_per_shard = records_per_shard
        self.shards: list[ShardInfo] = []
        self._writer, self._count = None, 0

    def write(self, example: dict[str, Any]) -> None:
        if self._writer is None:
            self._open()
        self._writer.write(encode_record(example))
        self._count += 1
        if self._count == self.records_per_shard:
            self._finish_shard()

    def _open(self) -> None:
        self._name = f"{self.split}-{len(self.shards):05d}.array_record"
        # group_size:1 keeps every record individually addressable for random access.
        self._writer = ArrayRecordWriter(str(self.directory / self._name), "group_size:1")
        self._count = 0

    def _finish_shard(self) -> None:
        self._writer.close()
        self.shards.append(
            ShardInfo(self._name, self._count, sha256_of(self.directory / self._name))
        )
        self._writer = None

    def close(self) -> list[ShardInfo]:
        if self._writer is not None:
            self._finish_shard()
        return self.shards


def write_dataset(
    directory: str | Path,
    name: str,
    splits: dict[str, Iterable[dict[str, Any]]],
    shapes: dict[str, tuple[int, ...]],
    label_names: list[str],
    attributes: dict[str, Any] | None = None,
    records_per_shard: int = 1000,
    before_manifest: Callable[[Path], None] | None = None,
) -> Manifest:
    """Writes every split's examples to shards, calls `before_manifest(directory)` to add
    companion files, then writes the manifest: a dataset with a manifest is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written, prevalence = {}, {}
    for split, examples in splits.items():
        writer = SplitWriter(directory, split, records_per_shard)
        positives, labelled = np.zeros(len(label_names)), 0
        for example in examples:
            writer.write(example)
            if example.get("labels") is not None:
                positives, labelled = positives + example["labels"], labelled + 1
        written[split] = writer.close()
        if labelled:
            prevalence[split] = [round(float(p), 6) for p in positives / labelled]
    # Per-split label prevalence, for class-weighted losses without a pass over the data.
    attributes = {**(attributes or {}), **({"label_prevalence": prevalence} if prevalence
                                           else {})}
    manifest = Manifest(name, field_specs(shapes), list(label_names), written, attributes)
    if before_manifest is not None:
        before_manifest(directory)
    (directory / MANIFEST).write_text(manifest.to_json())
    return manifest


# ---- Reading.


class ShardedSource:
    """Random access to one split's records (a grain RandomAccessDataSource).

    Checksums are verified on opening unless `verify=False`; each record is checked
    against the manifest's dtypes and shapes when read.
    """

    def __init__(self, directory: str | Path, split: str, verify: bool = True):
        self.directory = storage.path(directory)
        self.manifest = read_manifest(self.directory)
        self.split = split
        try:
            self._shards = self.manifest.split(split)
        except DatasetError as e:
            raise DatasetError(f"{self.directory}: {e}") from None
        manifest_path = self.directory / MANIFEST
        self._paths = [_inside(self.directory, s.path, manifest_path) for s in self._shards]
        for shard, path in zip(self._shards, self._paths, strict=True):
            if not path.is_file():
                raise DatasetError(f"{path}: shard listed in the manifest is missing")
            if verify and sha256_of(path) != shard.sha256:
                raise DatasetError(f"{path}: checksum mismatch (file changed or corrupt)")
        self._ends = np.cumsum([s.num_records for s in self._shards])
        self._readers: dict[int, ArrayRecordReader] = {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _reader(self, shard: int) -> ArrayRecordReader:
        if shard not in self._readers:
            path = self._paths[shard]
            try:
                reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
            except RuntimeError as e:
                raise DatasetError(f"{path}: not a readable array_record file ({e})") from e
            if reader.num_records() != self._shards[shard].num_records:
                raise DatasetError(
                    f"{path}: holds {reader.num_records()} records, manifest says "
                    f"{self._shards[shard].num_records}"
                )
            self._readers[shard] = reader
        return self._readers[shard]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        offset = index - (int(self._ends[shard - 1]) if shard else 0)
        where = f"{self._paths[shard]} record {offset}"
        try:
            data = self._reader(shard).read([offset])[0]
        except RuntimeError as e:
            raise DatasetError(f"{where}: unreadable ({e})") from e
        return self._validated(decode_record(data, where), where)

    def _validated(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        for name, value in record.items():
            spec = self.manifest.fields.get(name)
            if spec is None:
                raise DatasetError(f"{where}: field '{name}' is not in the manifest")
            if isinstance(value, np.ndarray):
                stored = f"{value.dtype.name}{list(value.shape)}"
                fits = value.dtype.name == spec["dtype"] and list(value.shape) == spec["shape"]
            else:
                stored, fits = f"a {type(value).__name__}", _plain_fits(value, spec)
            if not fits:
                raise DatasetError(f"{where}: field '{name}' is {stored}, manifest says "
                                   f"{spec['dtype']}{spec['shape']}")
        return record

    def __getstate__(self):
        """Readers hold file handles; worker processes reopen them."""
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state


def _plain_fits(value: Any, spec: dict) -> bool:
    """Whether a value stored as itself, not as an array, is what `spec` declares: a
    string for 'str', a number for a numeric scalar (never a string for an array)."""
    if spec["dtype"] == "str":
        return isinstance(value, str)
    return not spec["shape"] and isinstance(value, bool | int | float)
