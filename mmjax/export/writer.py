"""Writing an export: each encoder's embedding function as StableHLO with a symbolic batch,
its parameters as safetensors, the config, the tokenizer, export.json and the model card."""

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

import mmjax
from mmjax import config as config_lib
from mmjax import storage
from mmjax.data.schema import ECG_LEADS
from mmjax.export.card import count_params, model_card
from mmjax.export.layout import (
    BATCH,
    CARD,
    CONFIG_JSON,
    EXPORT_JSON,
    FORMAT,
    INPUTS,
    PLAIN_LOCATIONS,
    PLATFORMS,
    TOKENIZER,
    VERSION,
    sha256,
)
from mmjax.export.reader import read_info


def export(workdir: str | Path, out_dir: str | Path, step: int | None = None,
           data_path: str | None = None) -> Path:
    """Exports the encoders of `workdir` at checkpoint `step` (default the newest) to
    `out_dir`, which must be new, empty, or hold exactly a previous export (replaced).
    `data_path`: the dataset whose shapes an imported model is exported at (a trained one
    uses its own). Nothing in the workdir is written."""
    from mmjax import trained  # model code: only exporting needs it, not load()

    workdir = storage.path(workdir, "--workdir")  # a local folder or a bucket
    if storage.is_bucket(out_dir):
        raise config_lib.ConfigError(f"--out {out_dir}: exports are written to a local "
                                     "folder (then copy it, e.g. gcloud storage cp -r)")
    out_dir = Path(out_dir).absolute()
    _check_out_dir(out_dir, workdir)
    ctx = trained.load(workdir, step, data_path)
    # Written beside out_dir and moved into place, so a failed export leaves nothing.
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write(ctx, workdir, staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # _check_out_dir made sure it holds only an export
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _check_out_dir(out_dir: Path, workdir: Path) -> None:
    """Refuses a folder inside the workdir, or one holding anything but an export."""
    if not storage.is_bucket(workdir) and out_dir.resolve().is_relative_to(workdir.resolve()):
        raise config_lib.ConfigError(f"export folder {out_dir} is inside the workdir "
                                     f"{workdir}, which export never writes to")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise config_lib.ConfigError(f"export folder {out_dir} is a file")
    present = {p.name for p in out_dir.iterdir()}
    if not present:
        return
    try:
        info = json.loads((out_dir / EXPORT_JSON).read_text())
        ours = {*info["files"], EXPORT_JSON} if info.get("format") == FORMAT else set()
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    if not ours:
        raise config_lib.ConfigError(f"export folder {out_dir} is not empty and holds no "
                                     "previous export; choose a new or empty folder")
    if present - ours:
        raise config_lib.ConfigError(f"export folder {out_dir} holds a previous export and "
                                     f"also {sorted(present - ours)}; move those first")


def _write(ctx, workdir: Path, out: Path) -> None:
    """Every file of an export of the loaded workdir `ctx` into the folder `out`."""
    from mmjax.data import pipeline

    cfg = ctx.cfg
    variables = jax.device_get(ctx.variables)
    params = variables["params"]
    source, transform = pipeline.open_split(cfg.data, cfg.data.eval_split, ctx.tokenizer)
    example = transform(source[0])  # the shapes the encoders were trained on
    # Top-level scalars (the contrastive scale and bias) are built in the model's setup,
    # so tracing needs them; as closed-over constants unused by the encoders they vanish.
    scalars = {k: v for k, v in params.items() if not isinstance(v, dict)}
    modalities = {}
    for modality in ctx.model.modalities:
        subtree = _encoder_variables(variables, modality)
        exported = _export_encoder(ctx.model, modality, subtree, scalars, example)
        (out / f"{modality}.stablehlo").write_bytes(exported.serialize())
        (out / f"{modality}.safetensors").write_bytes(safetensors.numpy.save(_flatten(subtree)))
        modalities[modality] = _signature(exported, modality, subtree["params"], cfg,
                                          source.manifest)
    config_lib.save(cfg, out / CONFIG_JSON)
    ctx.tokenizer.save(str(out / TOKENIZER))
    info = {
        "format": FORMAT,
        "version": VERSION,
        "name": cfg.name,
        "step": ctx.step,
        "mmjax_version": mmjax.__version__,
        "jax_version": jax.__version__,
        "platforms": list(PLATFORMS),
        "embed_dim": cfg.model.embed_dim,
        "max_text_len": cfg.data.max_text_len,
        "label_names": list(ctx.label_names),
        "modalities": modalities,
        "contrastive": {
            "scale": math.exp(float(params["logit_scale"])),
            "bias": float(params["logit_bias"]),
            "note": "as trained, the logit of a pair is scale * dot(a, b) + bias",
        },
    }
    (out / CARD).write_text(model_card(ctx, workdir, params, info, source.manifest))
    info["files"] = {p.name: sha256(p.read_bytes()) for p in sorted(out.iterdir())}
    (out / EXPORT_JSON).write_text(json.dumps(info, indent=2) + "\n")
    read_info(out)  # the reader's rules, paths inside the folder included, before it is moved


def _encoder_variables(variables: dict, modality: str) -> dict:
    """The variables one embedding reads: the encoder's and its projection's parameters,
    and the encoder's BatchNorm statistics if it has any."""
    params = variables["params"]
    names = (f"encoders_{modality}", f"proj_{modality}")
    missing = [n for n in names if n not in params]
    if missing:
        raise config_lib.ConfigError(f"the checkpoint has no {missing} for modality "
                                     f"'{modality}'")
    subtree = {"params": {n: params[n] for n in names}}
    stats = variables.get("batch_stats", {}).get(f"encoders_{modality}")
    return {**subtree, "batch_stats": {f"encoders_{modality}": stats}} if stats else subtree


def _export_encoder(model, modality: str, variables: dict, scalars: dict, example: dict):
    """jax.export of f(params, *inputs) -> unit-norm embeddings, for any batch size."""
    names = INPUTS[modality]

    def fn(variables, *inputs):
        return model.apply({**variables, "params": {**variables["params"], **scalars}},
                           modality, dict(zip(names, inputs, strict=True)),
                           method="embed_inputs")

    (batch,) = jax.export.symbolic_shape(BATCH)
    specs = [jax.ShapeDtypeStruct((batch, *example[n].shape), example[n].dtype) for n in names]
    param_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
    with _jax_config(PLAIN_LOCATIONS):
        return jax.export.export(jax.jit(fn), platforms=PLATFORMS)(param_specs, *specs)


@contextlib.contextmanager
def _jax_config(values: dict):
    """jax.config `values` within the block (jax has no public context managers for them)."""
    previous = {name: getattr(jax.config, name) for name in values}
    try:
        for name, value in values.items():
            jax.config.update(name, value)
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{'a/b/c': array}; bfloat16, which safetensors.numpy lacks, is kept as float32
    (exactly) and cast back by load()."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            value = np.asarray(value)
            flat[f"{prefix}{key}"] = (value.astype(np.float32) if value.dtype == jnp.bfloat16
                                      else value)
    return flat


def _signature(exported, modality: str, params: dict, cfg, manifest) -> dict:
    """export.json's entry of one modality: files, inputs and how to prepare them."""
    avals = exported.in_avals[-len(INPUTS[modality]):]
    return {
        "function": f"{modality}.stablehlo",
        "params": f"{modality}.safetensors",
        "num_params": count_params(params),
        "inputs": [{"name": n, "shape": [d if isinstance(d, int) else str(d) for d in a.shape],
                    "dtype": a.dtype.name} for n, a in zip(INPUTS[modality], avals, strict=True)],
        "output": {"shape": [BATCH, cfg.model.embed_dim], "dtype": "float32",
                   "unit_norm": True},
        "preprocessing": _preprocessing(modality, avals, manifest, cfg.data),
        # The loader checks images against it: mmjax's own per-image standardisation is
        # exact (mean 0, std 1), a pretrained tower's (x - mean) / std has no such test.
        **({"standardisation": "per_example"}
           if modality == "image" and not cfg.data.image_mean else {}),
    }


def _preprocessing(modality: str, avals, manifest, data) -> str:
    """In words, what mmjax.data.pipeline does to a record before this encoder."""
    if modality == "image" and data.image_mean:
        return (f"image float32 {_shape(avals[0])}: intensities scaled to [0, 1] (the stored "
                f"uint16 / 65535), resized ({data.image_interpolation}) to that size, grey "
                "replicated to its channels, then (x - mean) / std per channel with mean "
                f"{list(data.image_mean)} and std {list(data.image_std)}; no augmentation")
    if modality == "image":
        return (f"image float32 {_shape(avals[0])}: intensities scaled to [0, 1] (the stored "
                "uint16 / 65535), then standardised per image to zero mean and unit variance "
                "over height, width and channels (std floored at 1e-6); no resizing, no "
                "augmentation")
    if modality == "video":
        return (f"video float32 {_shape(avals[0])}: uint8 frames / 255, the centred window of "
                "that many frames, standardised per clip to zero mean and unit variance over "
                "its real frames, height, width and channels, padding frames zero; video_mask "
                f"bool {_shape(avals[1])}: True on real frames (a prefix)")
    if modality == "audio":
        at = _at_rate(manifest, "audio_rate_hz")
        return (f"audio float32 {_shape(avals[0])}: mono samples in [-1, 1]{at}, the centred "
                "window of that many samples, zero padded at the end; audio_length int32 "
                f"{_shape(avals[1])}: the real samples. The spectrogram is computed inside")
    if modality == "signal":
        at = _at_rate(manifest, "signal_rate_hz")
        return (f"signal float32 {_shape(avals[0])}: ECG in millivolts{at}, not normalised, "
                f"the centred window of that many samples, leads in the order "
                f"{', '.join(ECG_LEADS)} with unrecorded leads zero; signal_leads bool "
                f"{_shape(avals[1])}: True where the lead was recorded")
    return (f"text int32 {_shape(avals[0])}: token ids of tokenizer.json, [CLS] report [SEP] "
            "then [PAD], a longer report cut keeping [SEP]; text_mask bool "
            f"{_shape(avals[1])}: True on real tokens. embed_text(texts) does both")


def _at_rate(manifest, key: str) -> str:
    rate = manifest.attributes.get(key)
    return f" at {rate} Hz" if rate else ""


def _shape(aval) -> str:
    return "[" + ", ".join(str(d) for d in aval.shape) + "]"

