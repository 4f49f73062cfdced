"""In-memory train / held-out splits of a generated corpus, and the batch order.

The batch at step s is a pure function of (seed, s): each epoch is a seeded
permutation of the examples. A resumed run therefore continues with exactly the
batch it would have seen, with nothing to save but the step.
"""

import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np

from mmjax.config import ConfigError, DataConfig
from mmjax.data import synthmed
from mmjax.data import tokenizer as tokenizer_lib

SOURCES = ("synthmed",)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 [N, H, W, 1], standardized per image
    token_ids: np.ndarray  # int32 [N, L]
    token_mask: np.ndarray  # bool [N, L]
    labels: np.ndarray  # uint8 [N, num_findings]
    reports: list[str]

    def __len__(self) -> int:
        return len(self.reports)

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "image": self.images[indices],
            "text": self.token_ids[indices],
            "text_mask": self.token_mask[indices],
        }


def standardize_images(images: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image: removes exposure and contrast differences
    between acquisitions, which otherwise dominate the small findings."""
    images = images.astype(np.float32)
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    return (images - mean) / np.maximum(std, 1e-6)


def _split(corpus: dict, tokenizer, max_text_len: int, name: str) -> Split:
    encoded = tokenizer_lib.encode(tokenizer, corpus["report"], max_text_len)
    if encoded.num_truncated:
        log.warning(
            "%s: %d of %d reports truncated to %d tokens (raise data.max_text_len)",
            name, encoded.num_truncated, len(corpus["report"]), max_text_len,
        )
    images = standardize_images(synthmed.window(corpus["image"]))[..., None]
    return Split(images, encoded.ids, encoded.mask, corpus["labels"], list(corpus["report"]))


def load_splits(cfg: DataConfig, workdir: str | Path):
    """Generates train and held-out patients (disjoint ids) and tokenizes them.

    The tokenizer is trained on train reports only and kept in the workdir, so a
    resumed run and later evaluation use exactly the same vocabulary.
    """
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source '{cfg.source}' is unknown; available: {', '.join(SOURCES)}")
    train_corpus = synthmed.generate(cfg.num_train, cfg.seed, cfg.image_size, start=0)
    eval_corpus = synthmed.generate(cfg.num_eval, cfg.seed, cfg.image_size, start=cfg.num_train)
    path = Path(workdir) / "tokenizer.json"
    if path.exists():
        tokenizer = tokenizer_lib.load(path)
    else:
        tokenizer = tokenizer_lib.train(train_corpus["report"], cfg.vocab_size)
        tokenizer.save(str(path))
    train = _split(train_corpus, tokenizer, cfg.max_text_len, "train")
    held_out = _split(eval_corpus, tokenizer, cfg.max_text_len, "eval")
    return train, held_out, tokenizer


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
    """Example indices of the batch at `step`; the ragged end of each epoch is dropped."""
    batches_per_epoch = num_examples // batch_size
    if batches_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size {batch_size} exceeds the {num_examples} training examples"
        )
    epoch, position = divmod(step, batches_per_epoch)
    permutation = _epoch_permutation(num_examples, seed, epoch)
    return permutation[position * batch_size : (position + 1) * batch_size]
