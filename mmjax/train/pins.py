"""What a workdir keeps of the data it trained on: a copy of the tokenizer, whose ids the
checkpoint's embeddings are indexed by, and the checksums of the dataset's shards, so a
dataset regenerated or replaced at the same path is refused instead of silently trained
on (or evaluated with remapped token ids)."""

import hashlib
import json
import logging

from mmjax import config as config_lib
from mmjax import storage
from mmjax.data import pipeline
from mmjax.data import tokenizer as tokenizer_lib

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"  # the workdir's copy
PINS_FILE = "dataset.json"


def tokenizer_digest(tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def pins(data_cfg, tokenizer) -> dict:
    """The tokenizer's digest and every split's shard checksums, from the dataset's
    manifest (a TFDS folder lists no shards: only its tokenizer is pinned)."""
    manifest = pipeline.open_source(data_cfg.path, data_cfg.train_split).manifest
    return {"path": str(data_cfg.path), "tokenizer_sha256": tokenizer_digest(tokenizer),
            "shards": {split: [shard.sha256 for shard in shards]
                       for split, shards in sorted(manifest.splits.items())}}


def _difference(before: dict, now: dict) -> str | None:
    if before["tokenizer_sha256"] != now["tokenizer_sha256"]:
        return "its tokenizer differs (token ids would mean other words)"
    for split, checksums in before["shards"].items():
        current = now["shards"].get(split)
        if current is None:
            return f"it has no split '{split}'"
        if current != checksums:
            changed = sum(a != b for a, b in zip(checksums, current, strict=False)) + abs(
                len(checksums) - len(current))
            return (f"{changed} of the {len(checksums)} shards of split '{split}' differ "
                    f"({len(current)} now)")
    return None


def check_and_pin(workdir, data_cfg, tokenizer, is_writer: bool, keep: bool = True) -> None:
    """On the first run, copies the tokenizer into the workdir and records the pins; on a
    resume, refuses a dataset or tokenizer that differs from them (ConfigError). `keep`
    False: nothing was trained on the old pins, so they are replaced."""
    workdir = storage.path(workdir)
    now = pins(data_cfg, tokenizer)
    path = workdir / PINS_FILE
    if path.exists() and keep:
        before = json.loads(path.read_text())
        if problem := _difference(before, now):
            raise config_lib.ConfigError(
                f"workdir {workdir} was trained on another dataset than the one now at "
                f"{data_cfg.path}: {problem} (pinned in {path}); restore that dataset or "
                "use a new --workdir")
        return
    if is_writer:
        (workdir / TOKENIZER_FILE).write_text(tokenizer.to_str())
        path.write_text(json.dumps(now, indent=2) + "\n")


def workdir_tokenizer(workdir, data_cfg):
    """The tokenizer a workdir trained with: its own copy, or (a workdir from before
    copies were kept) the one its config names."""
    copy = storage.path(workdir) / TOKENIZER_FILE
    if copy.exists():
        return tokenizer_lib.load(copy)
    log.info("%s keeps no tokenizer.json; using the dataset's", workdir)
    return pipeline.load_tokenizer(data_cfg)

