"""Embedding a whole split in fixed-size batches, padding the last one."""

import numpy as np

from mmjax.data.dataset import Split


def _padded_batches(num_examples: int, batch_size: int):
    """Yields (indices padded to batch_size, number of real examples)."""
    for start in range(0, num_examples, batch_size):
        indices = np.arange(start, min(start + batch_size, num_examples))
        real = len(indices)
        yield np.pad(indices, (0, batch_size - real), mode="edge"), real


def embed_split(embed_image, embed_text, params, split: Split, batch_size: int):
    """Image and text embeddings (float32 numpy) for every example, in order."""
    images, texts = [], []
    for indices, real in _padded_batches(len(split), batch_size):
        batch = split.batch(indices)
        images.append(np.asarray(embed_image(params, batch["image"]))[:real])
        texts.append(np.asarray(embed_text(params, batch["text"], batch["text_mask"]))[:real])
    return np.concatenate(images), np.concatenate(texts)
