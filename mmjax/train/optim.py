"""AdamW with warmup and cosine decay, no weight decay on gains, biases or scalars,
optional frozen parameters (LiT) and layer-wise learning-rate decay (fine-tuning)."""

import re

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from mmjax.config import ConfigError, OptimConfig

_BLOCK = re.compile(r"/(?:block|layer)_(\d+)/")
# Parameters below the first block of their tower: patch/token embeddings, positions, CLS.
_EMBEDDING = re.compile(r"^encoders_[a-z]+/(patch_embed|token_embed|pos_embed|cls|type_embed)")


def learning_rate_schedule(cfg: OptimConfig, num_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(num_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor,
    )


def _paths(params) -> dict:
    """The same tree with each leaf replaced by its 'a/b/c' path."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict({k: k for k in flat}, sep="/")


def _decay_mask(params):
    """Decay matrices and embeddings only (ndim >= 2), as CLIP does."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def frozen_labels(params, pattern: str):
    """'frozen' where the parameter path matches `pattern`, else 'trained'."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"optim.freeze '{pattern}' is not a regular expression: {e}") from e
    labels = jax.tree.map(lambda path: "frozen" if regex.search(path) else "trained",
                          _paths(params))
    if pattern and "frozen" not in jax.tree.leaves(labels):
        raise ConfigError(f"optim.freeze '{pattern}' matches no parameter path "
                          "(paths look like 'encoders_image/transformer/block_0/...')")
    return labels


def layer_scales(params, decay: float):
    """lr multipliers decay**(depth - layer): embeddings are layer 0, block i is i + 1,
    and what follows a tower (final norm, projections, heads) keeps the full rate."""
    paths = _paths(params)
    leaves = jax.tree.leaves(paths)
    towers = {p.split("/")[0] for p in leaves}
    depth = {t: 1 + max([int(m.group(1)) for p in leaves if p.startswith(t + "/")
                         for m in [_BLOCK.search(p)] if m], default=-1) for t in towers}

    def scale(path):
        tower = path.split("/")[0]
        if _EMBEDDING.search(path):
            layer = 0
        elif match := _BLOCK.search(path):
            layer = int(match.group(1)) + 1
        else:
            return 1.0
        return decay ** (depth[tower] + 1 - layer)

    return jax.tree.map(scale, paths)


def make_optimizer(cfg: OptimConfig, num_steps: int, params) -> optax.GradientTransformation:
    """The optimizer for `params` (their paths decide freezing and layer decay)."""
    adamw = optax.adamw(learning_rate_schedule(cfg, num_steps), b1=cfg.b1, b2=cfg.b2,
                        weight_decay=cfg.weight_decay, mask=_decay_mask)
    steps = [optax.clip_by_global_norm(cfg.grad_clip_norm), adamw]
    if cfg.layer_decay != 1.0:
        scales = layer_scales(params, cfg.layer_decay)
        steps.append(optax.stateless(
            lambda updates, _: jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype),
                                            updates, scales)))
    tx = optax.chain(*steps)
    if not cfg.freeze:
        return tx
    # Frozen parameters get no optimizer state at all, which is LiT's memory saving.
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                 frozen_labels(params, cfg.freeze))
