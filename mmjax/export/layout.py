"""What an export folder holds: its files, format version and each encoder's inputs."""

import hashlib
from pathlib import Path, PurePosixPath

from mmjax.data.schema import MODEL_INPUTS

FORMAT, VERSION = "mmjax-export", 1
PLATFORMS = ("cpu", "cuda", "tpu")
BATCH = "batch"  # the symbolic batch dimension's name
EXPORT_JSON, CONFIG_JSON, TOKENIZER, CARD = ("export.json", "config.json", "tokenizer.json",
                                             "MODEL_CARD.md")
# The batch fields each encoder reads, in the order its exported function takes them.
INPUTS = {modality: tuple(fields) for modality, fields in MODEL_INPUTS.items()}
# Debug locations as file name and line only: without them an export would hold the
# exporting caller's traceback and the machine's directories, and differ from run to run.
PLAIN_LOCATIONS = {"jax_include_full_tracebacks_in_locations": False,
                   "jax_hlo_source_file_canonicalization_regex": ".*/"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inside(directory: Path, key: str, name) -> Path:
    """The file export.json's `key` names, which must be a relative path that stays in the
    export folder (no absolute path, no '..', no symlink out): loading an export must never
    read, and a writer never name, a file elsewhere."""
    where = f"{directory / EXPORT_JSON}: {key}"
    relative = PurePosixPath(name) if isinstance(name, str) else None
    if not name or relative is None or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{where} names {name!r}, not a relative path inside the export "
                         "folder")
    path = directory / relative
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ValueError(f"{where} names '{name}', which resolves to {path.resolve()}, "
                         "outside the export folder")
    return path
