"""Softmax InfoNCE (CLIP loss) in both directions."""

import jax.numpy as jnp
import optax


def softmax_infonce(image_emb, text_emb, scale):
    """Mean of image->text and text->image cross-entropy; pair i matches pair i.

    Under jit with the batch sharded on the mesh, XLA gathers the columns so the
    logits span the global batch, exactly as on one device.
    """
    logits = scale * image_emb @ text_emb.T
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return 0.5 * (image_to_text.mean() + text_to_image.mean())
