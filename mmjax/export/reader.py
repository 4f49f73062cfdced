"""Loading an export without the model code: jax, numpy, safetensors and tokenizers only
(mmjax.data.tokenizer imports nothing else), so texts are tokenized as in training."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from mmjax.data import tokenizer as tokenizer_lib
from mmjax.export.layout import EXPORT_JSON, FORMAT, TOKENIZER, VERSION, inside, sha256

# How far a standardised image's mean and std may stray from 0 and 1 (float rounding,
# a resize after standardising) before it is refused as unprepared.
STANDARDISED_TOLERANCE = 0.05


def padded_size(size: int) -> int:
    """The batch a call of `size` examples runs at: the next power of two, so any number
    of batch sizes compiles each function only log2-many times."""
    return 1 << max(size - 1, 0).bit_length()


class ExportedModel:
    """The embedding functions of an export; a batch is padded to `padded_size`, so each
    is jitted once per power of two, not once per batch size."""

    def __init__(self, info: dict, functions: dict, params: dict, tokenizer):
        self.info = info  # export.json
        self._functions, self._params, self._tokenizer = functions, params, tokenizer

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.info["modalities"])

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.info["label_names"])

    @property
    def embed_dim(self) -> int:
        return self.info["embed_dim"]

    def embed(self, modality: str, *inputs) -> np.ndarray:
        """Unit-norm embeddings [batch, embed_dim] of prepared inputs, in the order and
        shapes export.json lists for `modality`."""
        if modality not in self._functions:
            raise ValueError(f"this export has no '{modality}' encoder; it has "
                             f"{', '.join(self.modalities)}")
        function, specs = self._functions[modality]
        if len(inputs) != len(specs):
            raise ValueError(f"{modality} takes {len(specs)} inputs "
                             f"({', '.join(s['name'] for s in specs)}), got {len(inputs)}")
        arrays = [np.asarray(x) for x in inputs]
        for x, spec in zip(arrays, specs, strict=True):
            expected = spec["shape"]
            if x.ndim != len(expected) or list(x.shape[1:]) != expected[1:]:
                raise ValueError(f"{modality} input '{spec['name']}' must have shape "
                                 f"[{', '.join(map(str, expected))}], got {list(x.shape)}")
        if len({x.shape[0] for x in arrays}) > 1:
            raise ValueError(f"{modality} inputs differ in batch size: "
                             f"{[x.shape[0] for x in arrays]}")
        for x, spec in zip(arrays, specs, strict=True):
            _check_values(modality, spec, x)
        if self.info["modalities"][modality].get("standardisation") == "per_example":
            _check_standardised(arrays[0], specs[0]["name"])
        size = arrays[0].shape[0]
        # Padding repeats the last example (a valid input), then is cut off again.
        arrays = [np.pad(x.astype(spec["dtype"], copy=False),
                         [(0, padded_size(size) - size)] + [(0, 0)] * (x.ndim - 1), mode="edge")
                  for x, spec in zip(arrays, specs, strict=True)]
        return np.asarray(function(self._params[modality], *arrays))[:size]

    def embed_image(self, images) -> np.ndarray:
        """Embeddings of standardised images [batch, H, W, C] (see export.json)."""
        return self.embed("image", images)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Report-encoder embeddings of free texts, tokenized as in training."""
        if "report" not in self._functions:
            raise ValueError(f"this export has no report encoder; it has "
                             f"{', '.join(self.modalities)}")
        encoded = tokenizer_lib.encode(self._tokenizer, list(texts), self.info["max_text_len"])
        return self.embed("report", encoded.ids, encoded.mask)


def _check_values(modality: str, spec: dict, x: np.ndarray) -> None:
    """Refuses what would embed as garbage without an error: an empty batch, integer
    arrays (raw uint8 or uint16 pixels) where floats are expected, NaN or Inf."""
    where = f"{modality} input '{spec['name']}'"
    if x.shape[0] == 0:
        raise ValueError(f"{where} is an empty batch")
    if not np.issubdtype(np.dtype(spec["dtype"]), np.floating):
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where} must be prepared floats ({spec['dtype']}), got {x.dtype} "
                         "(raw values?): prepare it as export.json's 'preprocessing' says")
    if not np.isfinite(x).all():
        raise ValueError(f"{where} holds NaN or Inf")


def _check_standardised(images: np.ndarray, name: str) -> None:
    """Each non-constant image at zero mean and unit variance, as the export's per-image
    standardisation leaves it (constant images standardise to zeros)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    mean, std = flat.mean(1), flat.std(1)
    tolerance = STANDARDISED_TOLERANCE
    bad = (std > tolerance) & ((np.abs(mean) > tolerance) | (np.abs(std - 1) > tolerance))
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"image input '{name}': example {k} has mean {mean[k]:.3g} and std "
                         f"{std[k]:.3g}, not 0 and 1: standardise each image as "
                         "export.json's 'preprocessing' says")


def load(directory: str | Path) -> ExportedModel:
    """An export written by `export`, every file checked against its export.json."""
    directory = Path(directory)
    info = read_info(directory)
    files = {name: _read(inside(directory, f"files['{name}']", name)) for name in info["files"]}
    for name, digest in info["files"].items():
        if sha256(files[name]) != digest:
            raise ValueError(f"{directory / name} is not the file exported (sha256 differs)")
    functions, params = {}, {}
    for modality, entry in info["modalities"].items():
        exported = jax.export.deserialize(files[entry["function"]])
        (param_avals, *_), _ = jax.tree_util.tree_unflatten(exported.in_tree,
                                                            exported.in_avals)
        tensors = safetensors.numpy.load(files[entry["params"]])
        params[modality] = _unflatten(param_avals, tensors, directory / entry["params"])
        functions[modality] = (jax.jit(exported.call), entry["inputs"])
    tokenizer = tokenizer_lib.load(directory / TOKENIZER)
    return ExportedModel(info, functions, params, tokenizer)


def read_info(directory: Path) -> dict:
    """export.json, checked for what load() reads: its format, and that every file it
    names is listed (with a SHA-256) under 'files'."""
    path = directory / EXPORT_JSON
    try:
        info = json.loads(_read(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not a JSON object")
    version = info.get("version")
    if info.get("format") != FORMAT or not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{path} is not a {FORMAT} of version <= {VERSION} (format "
                         f"{info.get('format')!r}, version {version!r})")
    files, modalities = info.get("files"), info.get("modalities")
    if not (isinstance(files, dict) and all(isinstance(d, str) for d in files.values())):
        raise ValueError(f"{path}: 'files' must map file names to SHA-256 digests")
    if not (isinstance(modalities, dict) and all(isinstance(e, dict)
                                                 for e in modalities.values())):
        raise ValueError(f"{path}: 'modalities' must map each modality to its entry")
    named = {f"modalities.{m}.{part}": entry.get(part)
             for m, entry in modalities.items() for part in ("function", "params")}
    for key, name in {**named, "the tokenizer": TOKENIZER}.items():
        inside(directory, key, name)
        if name not in files:
            raise ValueError(f"{path}: {key} names '{name}', which 'files' does not list "
                             "with its SHA-256")
    return info


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an export needs every file its "
                                f"{EXPORT_JSON} lists")
    return path.read_bytes()


def _unflatten(avals, tensors: dict, path: Path):
    """The tensors arranged as the function's parameter tree, checked leaf by leaf."""
    taken = set()

    def take(key_path, aval):
        key = jax.tree_util.keystr(key_path, simple=True, separator="/")
        if key not in tensors:
            raise ValueError(f"{path} lacks the parameter '{key}'")
        if tensors[key].shape != aval.shape:
            raise ValueError(f"{path}: parameter '{key}' has shape {tensors[key].shape}, "
                             f"the function expects {aval.shape}")
        taken.add(key)
        return jnp.asarray(tensors[key], aval.dtype)

    tree = jax.tree_util.tree_map_with_path(take, avals)
    if set(tensors) - taken:
        raise ValueError(f"{path} holds parameters the function does not take: "
                         f"{sorted(set(tensors) - taken)}")
    return tree
