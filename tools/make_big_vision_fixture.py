"""A random-weight SigLIP built by big_vision's own code (two_towers + vit +
text_transformer) and saved as big_vision saves checkpoints (.npz, "params/..." keys), with
its embeddings of fixed inputs: the reference for mmjax.interop.big_vision. Run once, with
the mmjax venv and a checkout of google-research/big_vision (JAX code; its TensorFlow and
ml_collections imports are stubbed, as nothing here reads files through them):

    .venv/bin/python tools/make_big_vision_fixture.py BIG_VISION_CHECKOUT --out tests/data/interop
"""

import argparse
import importlib.machinery
import os
import sys
import types

import jax
import numpy as np
from flax import traverse_util

IMAGE, PATCH, WIDTH, DEPTH, HEADS, MLP, VOCAB, CONTEXT, BATCH = 32, 8, 48, 2, 4, 96, 512, 16, 3


def _stub_imports(checkout: str) -> None:
    import flax.training.checkpoints  # noqa: F401 - before the stub: it probes for TensorFlow
    for name in ("tensorflow", "tensorflow.io", "tensorflow.io.gfile", "ml_collections"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules["tensorflow"].io = sys.modules["tensorflow.io"]
    sys.modules["tensorflow.io"].gfile = sys.modules["tensorflow.io.gfile"]
    sys.modules["ml_collections"].ConfigDict = dict
    sys.path.insert(0, checkout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout")
    parser.add_argument("--out", default="tests/data/interop")
    args = parser.parse_args()
    _stub_imports(args.checkout)
    from big_vision.models.proj.image_text import two_towers

    tower = {"width": WIDTH, "depth": DEPTH, "mlp_dim": MLP, "num_heads": HEADS}
    model = two_towers.Model(
        image={**tower, "patch_size": (PATCH, PATCH), "pool_type": "map", "posemb": "learn"},
        text={**tower, "vocab_size": VOCAB}, out_dim=(None, WIDTH), temperature_init=10.0,
        bias_init=-10.0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, IMAGE, IMAGE, 3)).astype(np.float32)
    lengths = (CONTEXT, 7, 11)  # then padded with the "sticky" EOS, id 1
    text = np.ones((BATCH, CONTEXT), np.int32)
    for row, length in enumerate(lengths):
        text[row, :length - 1] = rng.integers(2, VOCAB, length - 1)
    params = model.init(jax.random.key(0), images, text)["params"]
    # Noise on every parameter, so that biases and LayerNorm scales are not 0 and 1.
    keys = jax.random.split(jax.random.key(1), len(jax.tree.leaves(params)))
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys, strict=True)])
    zimg, ztxt, out = model.apply({"params": params}, images, text)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    np.savez(os.path.join(args.out, "big_vision_siglip.npz"),
             **{f"params/{k}": np.asarray(v) for k, v in flat.items()})
    np.savez(os.path.join(args.out, "big_vision_siglip_io.npz"), images=images, text=text,
             image_embeds=np.asarray(zimg), text_embeds=np.asarray(ztxt),
             logits=np.asarray(zimg @ ztxt.T * out["t"] + out["b"]))
    print(f"wrote {len(flat)} tensors; t={float(out['t'][0]):.3f} b={float(out['b'][0]):.3f}")


if __name__ == "__main__":
    main()
