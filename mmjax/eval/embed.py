"""Embedding every image-report pair of an eval split, batch by batch."""

import numpy as np


def embed_pairs(embed_image, embed_text, params, batches):
    """Image and text embeddings (float32 numpy) of the valid examples that have both.

    `batches` are global batches from `pipeline.eval_batches`; padding (valid=False)
    and examples missing a modality are dropped here, after the fixed-shape compute.
    """
    images, texts = [], []
    for batch in batches:
        keep = np.asarray(batch["valid"] & batch["has_image"] & batch["has_report"])
        images.append(np.asarray(embed_image(params, batch["image"]))[keep])
        texts.append(np.asarray(embed_text(params, batch["text"], batch["text_mask"]))[keep])
    if not images or not sum(len(i) for i in images):
        raise ValueError("the eval split has no example with both an image and a report")
    return np.concatenate(images), np.concatenate(texts)
