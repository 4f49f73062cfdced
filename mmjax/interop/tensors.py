"""Checkpoint tensors onto mmjax parameter paths: read safetensors, map each named tensor
with its layout change (torch Linear [out, in] -> flax kernels [in, ..., out]), and name
what did not fit — missing, unexpected or mis-shaped — in one error."""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors.numpy import load_file

from mmjax.errors import ConfigError

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CONVERT_COMMAND = "python tools/convert_to_safetensors.py {path}"  # in a torch environment
SHOWN = 5  # names listed per kind of problem


class InteropError(ConfigError):
    """A checkpoint that is not the architecture it claims, or not readable."""


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file; a pickled checkpoint is refused with the
    command that converts it."""
    path = Path(path)
    if path.suffix in PICKLED_SUFFIXES:
        raise InteropError(f"{path} is a pickled checkpoint, which mmjax never loads; "
                           f"convert it with `{CONVERT_COMMAND.format(path=path)}`")
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InteropError(f"{path}: not a readable safetensors file ({e})") from None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One checkpoint tensor: where it goes and how its layout becomes mmjax's."""

    name: str
    path: tuple[str, ...]
    shape: tuple[int | None, ...]  # the checkpoint's; None matches any size (vocabulary)
    convert: Callable[[np.ndarray], np.ndarray] | None = None  # None keeps the layout

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (None, got) for got, want in zip(shape, self.shape, strict=True))


def linear(name: str, path: tuple[str, ...], out_features: int, in_features: int,
           kernel: tuple[int, ...], bias: tuple[int, ...] | None) -> list[Entry]:
    """A torch Linear ([out, in] weight, optional bias) as a DenseGeneral of `kernel`."""
    entries = [Entry(f"{name}.weight", (*path, "kernel"), (out_features, in_features),
                     lambda w: w.T.reshape(kernel))]
    if bias is not None:
        entries.append(Entry(f"{name}.bias", (*path, "bias"), (out_features,),
                             lambda b: b.reshape(bias)))
    return entries


def layer_norm(name: str, path: tuple[str, ...], width: int) -> list[Entry]:
    return [Entry(f"{name}.weight", (*path, "scale"), (width,)),
            Entry(f"{name}.bias", (*path, "bias"), (width,))]


def attention(path: tuple[str, ...], width: int, heads: int, q: str, k: str, v: str,
              out: str) -> list[Entry]:
    """Separate q/k/v/out projections (Hugging Face) onto MultiHeadAttention."""
    per_head = (heads, width // heads)
    return [*linear(q, (*path, "query"), width, width, (width, *per_head), per_head),
            *linear(k, (*path, "key"), width, width, (width, *per_head), per_head),
            *linear(v, (*path, "value"), width, width, (width, *per_head), per_head),
            *linear(out, (*path, "out"), width, width, (*per_head, width), (width,))]


def packed_attention(name: str, path: tuple[str, ...], width: int, heads: int,
                     timm: bool = False) -> list[Entry]:
    """q, k and v in one [3D, D] matrix and bias: torch.nn.MultiheadAttention's
    `in_proj_weight` / `in_proj_bias` and `out_proj`, or timm's `qkv` and `proj`."""
    per_head = (heads, width // heads)
    weight, bias, out = (("qkv.weight", "qkv.bias", "proj") if timm else
                         ("in_proj_weight", "in_proj_bias", "out_proj"))
    entries = []
    for i, part in enumerate(("query", "key", "value")):
        rows = slice(i * width, (i + 1) * width)
        entries += [
            Entry(f"{name}.{weight}", (*path, part, "kernel"), (3 * width, width),
                  lambda w, rows=rows: w[rows].T.reshape(width, *per_head)),
            Entry(f"{name}.{bias}", (*path, part, "bias"), (3 * width,),
                  lambda b, rows=rows: b[rows].reshape(per_head)),
        ]
    return entries + linear(f"{name}.{out}", (*path, "out"), width, width,
                            (*per_head, width), (width,))


def patch_conv(name: str, path: tuple[str, ...], width: int, channels: int,
               patch: int) -> Entry:
    """A Conv2d patch stem [D, C, p, p] as PatchEmbed's kernel over (p, p, C) patches."""
    return Entry(name, (*path, "kernel"), (width, channels, patch, patch),
                 lambda w: w.transpose(2, 3, 1, 0).reshape(patch * patch * channels, width))


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def assemble(tensors: dict[str, np.ndarray], entries: Sequence[Entry], where: str,
             ignored: tuple[str, ...] = ()) -> dict:
    """The nested float32 parameter tree the entries describe. Tensors whose names start
    with `ignored` (buffers, heads mmjax does not use) are skipped; anything else not
    used, missing or of another shape is one InteropError naming the first few."""
    known = {entry.name for entry in entries}
    unexpected = sorted(n for n in tensors if n not in known and not n.startswith(ignored))
    missing = sorted({e.name for e in entries if e.name not in tensors})
    misshaped = sorted({f"{e.name} {tuple(tensors[e.name].shape)} (expected "
                        f"{tuple('any' if s is None else s for s in e.shape)})"
                        for e in entries if e.name in tensors
                        and not e.fits(tuple(tensors[e.name].shape))})
    problems = [f"{label}: {_listed(names)}" for label, names in (
        ("missing", missing), ("unexpected", unexpected), ("other shapes", misshaped)) if names]
    if problems:
        raise InteropError(f"{where} does not fit the architecture its config describes — "
                           + "; ".join(problems))
    flat = {}
    for entry in entries:
        array = np.asarray(tensors[entry.name], np.float32)
        flat[entry.path] = entry.convert(array) if entry.convert else array
    return traverse_util.unflatten_dict(flat)


def merge(params: dict, loaded: dict) -> dict:
    """`params` (a model's initialised tree) with every leaf of `loaded` put in its place,
    each keeping the dtype of the leaf it replaces; a loaded leaf the model lacks, or of
    another shape, is an InteropError naming it. `params` itself is not modified."""
    flat = traverse_util.flatten_dict(params)
    for key, value in traverse_util.flatten_dict(loaded).items():
        name = "/".join(key)
        if key not in flat:
            raise InteropError(f"the model has no parameter '{name}'")
        if np.shape(value) != np.shape(flat[key]):
            raise InteropError(f"'{name}' has shape {np.shape(value)} in the checkpoint but "
                               f"{np.shape(flat[key])} in the model")
        flat[key] = np.asarray(value, flat[key].dtype)
    return traverse_util.unflatten_dict(flat)


def _checkpoint_shape(entry: Entry, value: np.ndarray) -> tuple[int, ...]:
    """The entry's checkpoint shape, its one open size (the vocabulary) filled in."""
    if None not in entry.shape:
        return entry.shape
    if entry.shape.count(None) > 1:
        raise InteropError(f"{entry.name}: more than one open size")
    known = int(np.prod([s for s in entry.shape if s is not None]))
    return tuple(value.size // known if s is None else s for s in entry.shape)


def disassemble(params: dict, entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """assemble() backwards: every checkpoint tensor the entries name, rebuilt from the
    parameters. Each entry's layout change is undone by running it on the tensor's element
    indices, so transposes, reshapes and packed q/k/v invert alike; a tensor some element
    of which no parameter fills is an InteropError."""
    flat = traverse_util.flatten_dict(params)
    built: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    for entry in entries:
        if entry.path not in flat:
            raise InteropError(f"the model has no parameter '{'/'.join(entry.path)}' for "
                               f"{entry.name}")
        value = np.asarray(flat[entry.path], np.float32)
        shape = _checkpoint_shape(entry, value)
        index = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
        positions = (entry.convert(index) if entry.convert else index).astype(np.int64)
        if positions.shape != value.shape:
            raise InteropError(f"'{'/'.join(entry.path)}' has shape {value.shape}, the layout "
                               f"of {entry.name} gives {positions.shape}")
        tensor = built.setdefault(entry.name, np.zeros(shape, np.float32))
        covered = filled.setdefault(entry.name, np.zeros(shape, bool))
        tensor.reshape(-1)[positions.ravel()] = value.ravel()
        covered.reshape(-1)[positions.ravel()] = True
    if unfilled := [name for name, covered in filled.items() if not covered.all()]:
        raise InteropError(f"no parameter fills all of {_listed(unfilled)}")
    return built
