"""Masked-autoencoder reconstruction on held-out data: the normalised-pixel error on the
hidden patches (the training loss, with masks fixed per example), and an image grid of
original / visible patches / reconstruction for the run report."""

import einops
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.config import ConfigError
from mmjax.eval.registry import register
from mmjax.objectives.mae import random_keep

SEED = 0


def _reconstruct(model, variables, batch, modality: str, mask_ratio: float):
    """Per-example error and, as pixels, the predictions de-normalised with each target
    patch's own mean and spread (how MAE shows its norm_pix reconstructions)."""
    rngs = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(SEED), i))(batch["index"])
    keep, hidden = random_keep(rngs, model.num_patches(modality, batch), mask_ratio)
    predictions, targets = model.apply(variables, modality, batch, keep, method="mae")
    mean = targets.mean(-1, keepdims=True)
    std = jnp.sqrt(targets.var(-1, keepdims=True) + 1e-6)
    normalized = (targets - mean) / std
    errors = jnp.sum(jnp.mean((predictions - normalized) ** 2, -1) * hidden, 1) / \
        jnp.sum(hidden, 1)
    return {"error": errors, "pixels": predictions * std + mean, "hidden": hidden}


@register("reconstruction")
def evaluate(ctx, run) -> dict:
    objectives = ctx.cfg.objectives
    results = {}
    for modality in objectives.mae_modalities:
        if modality not in ctx.model.modalities:
            continue
        reconstruct = ctx.jit(lambda v, b, m=modality: _reconstruct(
            ctx.model, v, b, m, objectives.mae_mask_ratio),
            f"reconstruction/{modality}")
        keep = (f"has_{modality}", modality) if modality == "image" else (f"has_{modality}",)
        out = ctx.run(reconstruct, run.split, keep=keep)
        present = out[f"has_{modality}"]
        if not present.any():
            continue
        results[modality] = {"num_examples": int(present.sum()),
                             "error": float(out["error"][present].mean())}
        if modality == "image":
            ctx.save_arrays(run.file("_image.npz"),
                            **_grid_rows(out, present, ctx.model.patch_shape("image"),
                                         run.options.examples))
    if not results:
        raise ConfigError(f"evaluator '{run.name}': no example of split '{run.split}' has a "
                          "modality in objectives.mae_modalities")
    return results


def _grid_rows(out, present, patch, count) -> dict:
    """original, masked and reconstructed images [count, H, W, C] of present examples."""
    images = out["image"][present][:count]
    size = images.shape[1] // patch[0]

    def unpatchify(x):
        return einops.rearrange(x, "b (h w) (p q c) -> b (h p) (w q) c", h=size, p=patch[0],
                                q=patch[1])

    hidden = out["hidden"][present][:count][..., None].astype(np.float32)
    patches = einops.rearrange(images, "b (h p) (w q) c -> b (h w) (p q c)", p=patch[0],
                               q=patch[1])
    return {"original": images, "masked": unpatchify(patches * (1 - hidden)),
            "reconstruction": unpatchify(np.where(hidden > 0, out["pixels"][present][:count],
                                                  patches))}
