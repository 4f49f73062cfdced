"""What an export folder holds: its files, format version and each encoder's inputs."""

import hashlib

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
