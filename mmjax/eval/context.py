"""What every evaluator sees: the model with its parameters on the mesh, and a split run
through it once — each example exactly once, on any number of hosts.

Batches are fixed-size and sharded like training batches; the padding that fills the last
ones (`valid=False`) is dropped only after the results are gathered to the host, so the
compiled functions see one shape and every host takes part in every collective.
"""

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grain
import jax
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from mmjax import config as config_lib
from mmjax.data import pipeline, schema
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.nn.model import MultimodalModel
from mmjax.parallel import rules
from mmjax.parallel.mesh import batch_sharding


def to_host(x) -> np.ndarray:
    """A global array as one numpy array on every host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@dataclasses.dataclass
class Predictions:
    """The model's outputs on a split, one row per example in split order."""

    index: np.ndarray  # [N] record index within the split
    embeddings: dict[str, np.ndarray]  # modality -> [N, D], unit norm
    present: dict[str, np.ndarray]  # modality -> [N] bool
    labels: np.ndarray  # [N, F] float 0/1
    has_labels: np.ndarray  # [N] bool
    risk: np.ndarray  # [N]
    has_risk: np.ndarray  # [N] bool
    diagnosis: np.ndarray | None  # [N, F] logits of the diagnosis head, if the model has one
    risk_logit: np.ndarray | None  # [N]


class NonfiniteOutputs(config_lib.ConfigError):
    """The model gives NaN or Inf where every evaluator needs numbers."""


def check_finite(out: dict[str, np.ndarray], present: dict[str, np.ndarray], where: str) -> None:
    """Refuses NaN/Inf embeddings of present examples and NaN/Inf head logits: they would
    rank, score and threshold as arbitrary numbers, so a broken model could look good."""
    any_present = np.logical_or.reduce(list(present.values()))
    for name, values in out.items():
        rows = present.get(name.removeprefix("embeddings/"), any_present)
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1) & rows
        if bad.any():
            raise NonfiniteOutputs(
                f"{where}: the model gives NaN or Inf {name} for {int(bad.sum())} of "
                f"{int(rows.sum())} examples (first: record {int(np.argmax(bad))}); its "
                "weights or those inputs are damaged, so nothing is scored. Evaluate an "
                "earlier checkpoint (--step) or check those records")


@dataclasses.dataclass
class EvalContext:
    """The model, its variables ({"params": model-only parameters, and "batch_stats" when it
    has BatchNorm}) placed by `shardings` on `mesh`, the data it reads, and where
    evaluators put their files (None: nowhere, or not host 0)."""

    cfg: config_lib.Config
    model: MultimodalModel
    variables: dict
    shardings: dict
    mesh: jax.sharding.Mesh
    tokenizer: object
    label_names: tuple[str, ...]
    step: int
    out_dir: Path | None = None
    _results: dict = dataclasses.field(default_factory=dict, repr=False)  # of these variables
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)  # for any variables

    def at(self, variables: dict, step: int) -> "EvalContext":
        """This context for new variables (evals during training): results are
        recomputed, jitted functions are kept, so nothing is traced twice."""
        return dataclasses.replace(self, variables=variables, step=step, _results={})

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Report-tower embeddings [N, D] of free texts (prompts), tokenized like reports."""
        encoded = tokenizer_lib.encode(self.tokenizer, texts, self.cfg.data.max_text_len)
        if "embed_texts" not in self._compiled:
            self._compiled["embed_texts"] = jax.jit(lambda v, ids, mask: self.model.apply(
                v, ids, mask, method=self.model.embed_text))
        with rules.sharding_context(self.mesh):
            return to_host(self._compiled["embed_texts"](self.variables, encoded.ids,
                                                         encoded.mask))

    # ---- Data.

    def batches(self, split: str | None = None, limit: int = 0) -> Iterator[dict]:
        """Global batches of `split` (default data.eval_split), its first `limit`
        examples when limit > 0, padded to the eval batch size."""
        split = split or self.cfg.data.eval_split
        source, transform = pipeline.open_split(self.cfg.data, split, self.tokenizer)
        if limit:
            source = grain.MapDataset.source(source)[:limit]
        per_host = self.cfg.eval.batch_size // jax.process_count()
        sharding = batch_sharding(self.mesh)
        for batch in pipeline.eval_batches(source, transform, per_host, jax.process_index(),
                                           jax.process_count()):
            yield jax.make_array_from_process_local_data(sharding, batch)

    def jit(self, fn: Callable, name: str) -> Callable:
        """fn(variables, batch) jitted with variables where they live and batch-sharded inputs
        and outputs, traced under the mesh's logical-axis rules; jitted once per `name`
        for the life of the context and those made from it by `at`."""
        if name not in self._compiled:
            data = batch_sharding(self.mesh)
            self._compiled[name] = jax.jit(fn, in_shardings=(self.shardings, data),
                                           out_shardings=data)
        compiled = self._compiled[name]

        def call(*args):
            with rules.sharding_context(self.mesh):
                return compiled(*args)

        return call

    def run(self, fn: Callable, split: str | None = None, limit: int = 0,
            keep: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Runs jitted fn(variables, batch) -> {name: [B, ...]} over the split and returns
        each output, plus the batch fields named in `keep`, as host arrays of the valid
        examples in split order. Checks that every example was seen exactly once."""
        chunks: dict[str, list] = {}
        for batch in self.batches(split, limit):
            outputs = jax.tree.map(to_host, fn(self.variables, batch))
            fields = {k: to_host(batch[k]) for k in ("valid", "index", *keep)}
            valid = fields.pop("valid")
            flat = {**traverse_util.flatten_dict(outputs, sep="/"), **fields}
            for key, value in flat.items():
                chunks.setdefault(key, []).append(value[valid])
        if not chunks:
            raise config_lib.ConfigError(f"split '{split or self.cfg.data.eval_split}' "
                                         f"of {self.cfg.data.path} is empty")
        result = {k: np.concatenate(v) for k, v in chunks.items()}
        order = np.argsort(result["index"], kind="stable")
        result = {k: v[order] for k, v in result.items()}
        expected = np.arange(len(order))
        if not np.array_equal(result["index"], expected):
            raise RuntimeError("evaluation did not see every example exactly once")
        return result

    def predictions(self, split: str | None = None, limit: int = 0) -> Predictions:
        """Embeddings (and head logits) of a split, computed once per context."""
        key = (split or self.cfg.data.eval_split, limit)
        if key not in self._results:
            heads = tuple(h for h in ("diagnosis", "risk") if h in self.variables["params"])
            predict = self.jit(lambda v, b: self.model.apply(v, b, heads, method="predict"),
                               f"predict/{'+'.join(heads)}")
            modalities = self.model.modalities
            out = self.run(predict, *key,
                           keep=("labels", "has_labels", "risk", "has_risk",
                                 *(f"has_{m}" for m in modalities)))
            check_finite({**{f"embeddings/{m}": out[f"embeddings/{m}"] for m in modalities},
                          **{k: out[k] for k in ("diagnosis", "risk_logit") if k in out}},
                         {m: out[f"has_{m}"] for m in modalities},
                         f"step {self.step}, split '{key[0]}' of {self.cfg.data.path}")
            self._results[key] = Predictions(
                index=out["index"],
                embeddings={m: out[f"embeddings/{m}"] for m in modalities},
                present={m: out[f"has_{m}"] for m in modalities},
                labels=out["labels"], has_labels=out["has_labels"], risk=out["risk"],
                has_risk=out["has_risk"], diagnosis=out.get("diagnosis"),
                risk_logit=out.get("risk_logit"))
        return self._results[key]

    def records(self, indices, split: str | None = None) -> list[dict]:
        """Stored records of a split by index: raw report text and arrays, for display."""
        source = pipeline.open_source(self.cfg.data.path, split or self.cfg.data.eval_split)
        return [source[int(i)] for i in indices]

    @staticmethod
    def display_image(record: dict) -> np.ndarray:
        """A stored image as float [H, W, C] in [0, 1] (zeros when the record has none)."""
        image = record.get("image")
        return np.zeros((1, 1, 1), np.float32) if image is None else schema.stored_to_image(image)

    # ---- Files.

    def save_json(self, name: str, value) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / name).write_text(json.dumps(value, indent=2) + "\n")

    def save_arrays(self, name: str, **arrays) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with (self.out_dir / name).open("wb") as f:  # a local file or a bucket object
                np.savez_compressed(f, **arrays)

