"""Starting parameters from somewhere else: a pretraining workdir (`init.from`, matched
by parameter path) or a BERT-style text checkpoint (`init.text_from`)."""

import logging
from pathlib import Path

import numpy as np
from flax import traverse_util

from mmjax import storage
from mmjax.config import ConfigError, InitConfig, TextConfig
from mmjax.nn import pretrained
from mmjax.train.checkpoint import holds_steps, place, read_fields

log = logging.getLogger(__name__)


def _checkpoint_dir(source: Path) -> Path:
    """A workdir's checkpoints/ folder, or the folder itself if it holds checkpoints."""
    for candidate in (source / "checkpoints", source):
        if holds_steps(candidate):
            return candidate
    raise ConfigError(f"init.from: no checkpoint under {source} (expected a workdir with "
                      "checkpoints/<step>/)")


def pretrained_variables(source: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The parameters and BatchNorm statistics ({} without) of the newest checkpoint under
    `source`, each flat by 'a/b/c' path."""
    directory = _checkpoint_dir(storage.path(source))
    restored, step = read_fields(directory, ("params", "batch_stats"))
    log.info("init.from: read step %d of %s", step, directory)
    return {collection: traverse_util.flatten_dict(restored.get(collection) or {}, sep="/")
            for collection in ("params", "batch_stats")}


def restore_matching(params: dict, source: dict[str, np.ndarray],
                     required: bool = True) -> tuple[dict, dict]:
    """`params` with every leaf whose path and shape match one in `source` replaced.

    Returns the new params and a report {'restored', 'new', 'unused', 'mismatched'} of
    paths: 'new' are the fresh ones (task heads), 'mismatched' have a different shape.
    Raises ConfigError when nothing matches and `required`, since that is never a fine-tune.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    report = {"restored": [], "new": [], "mismatched": [],
              "unused": sorted(source.keys() - flat.keys())}
    for path, target in flat.items():
        if path not in source:
            report["new"].append(path)
        elif np.shape(source[path]) != target.shape:
            report["mismatched"].append(path)
        else:
            flat[path] = place(np.asarray(source[path], target.dtype), target.sharding)
            report["restored"].append(path)
    if required and not report["restored"]:
        raise ConfigError("init.from: no parameter of the checkpoint matches this model by "
                          "name and shape")
    return traverse_util.unflatten_dict(flat, sep="/"), report


def warm_start(params: dict, batch_stats: dict, cfg: InitConfig,
               text_cfg: TextConfig) -> tuple[dict, dict]:
    """Applies init.from (parameters, and BatchNorm statistics where both models have the
    layer), then init.text_from, logging what was taken."""
    if cfg.from_:
        source = pretrained_variables(cfg.from_)
        params, report = restore_matching(params, source["params"])
        batch_stats, _ = restore_matching(batch_stats, source["batch_stats"], required=False)
        log.info("init.from: %d tensors restored, %d new (%s), %d of the checkpoint unused, "
                 "%d with other shapes", len(report["restored"]), len(report["new"]),
                 ", ".join(sorted({p.split("/")[0] for p in report["new"]})) or "none",
                 len(report["unused"]), len(report["mismatched"]))
    if cfg.text_from:
        try:
            text_params = pretrained.load_bert_params(cfg.text_from, text_cfg)
            params = pretrained.load_into(params, text_params)
        except (OSError, ValueError) as e:
            raise ConfigError(f"init.text_from: {e}") from e
        log.info("init.text_from: report encoder loaded from %s", cfg.text_from)
    return params, batch_stats
