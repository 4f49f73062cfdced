"""Trained encoders as artifacts that run without the model code.

`export` writes, per modality, the embedding function f(params, *inputs) -> unit-norm
[batch, embed_dim] as serialized StableHLO (jax.export, symbolic batch, lowered for
CPU, CUDA and TPU) and that encoder's parameters as safetensors, beside the tokenizer,
the training config, export.json (what each function takes) and MODEL_CARD.md.

`load` needs only jax, numpy, safetensors and tokenizers: no flax, no mmjax.nn, so an
export keeps working where the training code is absent or has since changed. It
tokenizes with mmjax.data.tokenizer.encode, which imports only numpy and tokenizers,
so texts are cut and padded exactly as in training.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from mmjax import config as config_lib
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.schema import ECG_LEADS

FORMAT, VERSION = "mmjax-export", 1
PLATFORMS = ("cpu", "cuda", "tpu")
BATCH = "batch"  # the symbolic batch dimension's name
EXPORT_JSON, CONFIG_JSON, TOKENIZER, CARD = ("export.json", "config.json", "tokenizer.json",
                                             "MODEL_CARD.md")
# The ExampleTransform fields each encoder reads, in the order its function takes them.
INPUTS = {
    "image": ("image",),
    "video": ("video",),
    "signal": ("signal", "signal_leads"),
    "report": ("text", "text_mask"),
}
# Debug locations as file name and line only: without them an export would hold the
# exporting caller's traceback and the machine's directories, and differ from run to run.
PLAIN_LOCATIONS = {"jax_include_full_tracebacks_in_locations": False,
                   "jax_hlo_source_file_canonicalization_regex": ".*/"}
ENCODER_CONFIG = {"image": "image", "video": "video", "signal": "signal", "report": "text"}


# ---- Export.


def export(workdir: str | Path, out_dir: str | Path, step: int | None = None) -> Path:
    """Exports the encoders of `workdir` at checkpoint `step` (default the newest) to
    `out_dir`, which must be new, empty, or hold exactly a previous export (replaced).
    Nothing in the workdir is written."""
    from mmjax.eval import trained  # model code: only exporting needs it, not load()

    workdir, out_dir = Path(workdir), Path(out_dir).absolute()
    _check_out_dir(out_dir, workdir)
    ctx = trained.load(workdir, step)
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
    if out_dir.resolve().is_relative_to(workdir.resolve()):
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
    params = jax.device_get(ctx.params)
    source, transform = pipeline.open_split(cfg.data, cfg.data.eval_split, ctx.tokenizer)
    example = transform(source[0])  # the shapes the encoders were trained on
    # Top-level scalars (the contrastive scale and bias) are built in the model's setup,
    # so tracing needs them; as closed-over constants unused by the encoders they vanish.
    scalars = {k: v for k, v in params.items() if not isinstance(v, dict)}
    modalities = {}
    for modality in ctx.model.modalities:
        subtree = _encoder_params(params, modality)
        exported = _export_encoder(ctx.model, modality, subtree, scalars, example)
        (out / f"{modality}.stablehlo").write_bytes(exported.serialize())
        (out / f"{modality}.safetensors").write_bytes(safetensors.numpy.save(_flatten(subtree)))
        modalities[modality] = _signature(exported, modality, subtree, cfg, source.manifest)
    config_lib.save(cfg, out / CONFIG_JSON)
    ctx.tokenizer.save(str(out / TOKENIZER))
    info = {
        "format": FORMAT,
        "version": VERSION,
        "name": cfg.name,
        "step": ctx.step,
        "jax_version": jax.__version__,
        "platforms": list(PLATFORMS),
        "embed_dim": cfg.model.embed_dim,
        "max_text_len": cfg.data.max_text_len,
        "label_names": list(ctx.label_names),
        "modalities": modalities,
        "contrastive": {
            "scale": float(min(math.exp(float(params["logit_scale"])),
                               cfg.model.max_logit_scale)),
            "bias": float(params["logit_bias"]),
            "note": "as trained, the logit of a pair is scale * dot(a, b) + bias",
        },
    }
    (out / CARD).write_text(_model_card(ctx, workdir, params, info, source.manifest))
    info["files"] = {p.name: _sha256(p.read_bytes()) for p in sorted(out.iterdir())}
    (out / EXPORT_JSON).write_text(json.dumps(info, indent=2) + "\n")


def _encoder_params(params: dict, modality: str) -> dict:
    """The parameters one embedding reads: the encoder and its projection."""
    names = (f"encoders_{modality}", f"proj_{modality}")
    missing = [n for n in names if n not in params]
    if missing:
        raise config_lib.ConfigError(f"the checkpoint has no {missing} for modality "
                                     f"'{modality}'")
    return {n: params[n] for n in names}


def _export_encoder(model, modality: str, params: dict, scalars: dict, example: dict):
    """jax.export of f(params, *inputs) -> unit-norm embeddings, for any batch size."""
    names = INPUTS[modality]

    def embed(module, *inputs):
        pooled, _, _ = module.encode(modality, dict(zip(names, inputs, strict=True)))
        return module.embed(modality, pooled)

    def fn(params, *inputs):
        return model.apply({"params": {**params, **scalars}}, *inputs, method=embed)

    (batch,) = jax.export.symbolic_shape(BATCH)
    specs = [jax.ShapeDtypeStruct((batch, *example[n].shape), example[n].dtype) for n in names]
    param_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
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
        "num_params": _count(params),
        "inputs": [{"name": n, "shape": [d if isinstance(d, int) else str(d) for d in a.shape],
                    "dtype": a.dtype.name} for n, a in zip(INPUTS[modality], avals, strict=True)],
        "output": {"shape": [BATCH, cfg.model.embed_dim], "dtype": "float32",
                   "unit_norm": True},
        "preprocessing": _preprocessing(modality, avals, manifest),
    }


def _preprocessing(modality: str, avals, manifest) -> str:
    """In words, what mmjax.data.pipeline does to a record before this encoder."""
    if modality == "image":
        return (f"image float32 {_shape(avals[0])}: intensities scaled to [0, 1] (the stored "
                "uint16 / 65535), then standardised per image to zero mean and unit variance "
                "over height, width and channels (std floored at 1e-6); no resizing, no "
                "augmentation")
    if modality == "video":
        return (f"video float32 {_shape(avals[0])}: uint8 frames / 255, the centred window of "
                "that many frames, standardised per clip to zero mean and unit variance over "
                "frames, height, width and channels")
    if modality == "signal":
        rate = manifest.attributes.get("signal_rate_hz")
        at = f" at {rate} Hz" if rate else ""
        return (f"signal float32 {_shape(avals[0])}: ECG in millivolts{at}, not normalised, "
                f"the centred window of that many samples, leads in the order "
                f"{', '.join(ECG_LEADS)} with unrecorded leads zero; signal_leads bool "
                f"{_shape(avals[1])}: True where the lead was recorded")
    return (f"text int32 {_shape(avals[0])}: token ids of tokenizer.json, [CLS] report [SEP] "
            "then [PAD], a longer report cut keeping [SEP]; text_mask bool "
            f"{_shape(avals[1])}: True on real tokens. embed_text(texts) does both")


def _shape(aval) -> str:
    return "[" + ", ".join(str(d) for d in aval.shape) + "]"


def _count(tree) -> int:
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- Model card.


OBJECTIVE_DETAILS = {
    "contrastive": lambda o: (f"{o.contrastive_loss} contrastive loss over "
                              f"{', '.join(o.contrastive_pairs)}"),
    "mlm": lambda o: f"masked language modelling, {o.mlm_probability:.0%} of report tokens",
    "mae": lambda o: (f"masked autoencoding of {', '.join(o.mae_modalities)}, "
                      f"{o.mae_mask_ratio:.0%} of patches hidden"),
    "matching": lambda o: f"{o.matching_pair} matching on the fused vector, hard negatives",
    "caption": lambda o: "teacher-forced report generation",
    "diagnosis": lambda o: (f"multi-label findings from the fused vector ({o.diagnosis_loss}"
                            f"{', class-weighted' if o.class_weights else ''})"),
    "risk": lambda o: "binary risk outcome from the fused vector",
}


def _model_card(ctx, workdir: Path, params: dict, info: dict, manifest) -> str:
    cfg = ctx.cfg
    sections = [
        f"# Model card: {cfg.name} (mmjax export, step {ctx.step})",
        _card_model(cfg, params, info),
        _card_data(cfg, ctx.label_names, manifest),
        _card_training(cfg, ctx.step, workdir),
        _card_metrics(cfg, ctx.step, workdir),
        _card_use(cfg, info, _synthetic(manifest)),
    ]
    return "\n\n".join(sections) + "\n"


def _card_model(cfg, params: dict, info: dict) -> str:
    rows = []
    for modality, entry in info["modalities"].items():
        encoder = getattr(cfg.model, ENCODER_CONFIG[modality])
        arch = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(encoder).items())
        inputs = "; ".join(f"`{i['name']}` {i['dtype']} [{', '.join(map(str, i['shape']))}]"
                           for i in entry["inputs"])
        rows.append(f"| {modality} | {arch} | {inputs} | {entry['num_params']:,} |")
    return "\n".join([
        "## Model",
        "",
        f"One transformer encoder per modality, each followed by a linear projection to a "
        f"shared {cfg.model.embed_dim}-dimensional space; embeddings are L2-normalised, so "
        f"the dot product of two is their cosine similarity. Compute dtype {cfg.model.dtype}, "
        f"parameters {cfg.model.param_dtype}.",
        "",
        "| encoder | architecture | inputs (batch is any size) | parameters (with projection) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Exported: {sum(e['num_params'] for e in info['modalities'].values()):,} parameters. "
        f"The trained model had {_count(params):,} in all; its fusion and task heads are not "
        f"exported. Functions are StableHLO (jax.export, jax {jax.__version__}) for "
        f"{', '.join(PLATFORMS)}.",
    ])


def _card_data(cfg, label_names, manifest) -> str:
    from mmjax.data import pipeline

    splits = {cfg.data.train_split: "training", cfg.data.eval_split: "held-out evaluation"}
    counts = [f"| {s} | {len(pipeline.open_source(cfg.data.path, s)):,} | {role} |"
              for s, role in splits.items()]
    lines = [
        "## Training data",
        "",
        f"Dataset `{manifest.name}` at `{cfg.data.path}`"
        + (" — **synthetic** (SynthMed, generated by mmjax: simulated patients, images, "
           "echo clips, ECGs and reports; no real patient data)." if _synthetic(manifest)
           else "."),
        f"Modalities: {', '.join(cfg.data.modalities)}; reports up to "
        f"{cfg.data.max_text_len} tokens.",
        "",
        "| split | records | use |",
        "|---|---|---|",
        *counts,
    ]
    if label_names:
        prevalence = manifest.attributes.get("label_prevalence", {})
        shown = [s for s in splits if s in prevalence]
        lines += ["", "Labels" + (" and their prevalence:" if shown else ":"), "",
                  "| label | " + " | ".join(f"{s} prevalence" for s in shown) + " |",
                  "|---|" + "---|" * len(shown)]
        lines += [f"| {name} | " + " | ".join(f"{prevalence[s][i]:.1%}" for s in shown) + " |"
                  for i, name in enumerate(label_names)]
    return "\n".join(lines)


def _synthetic(manifest) -> bool:
    return manifest.attributes.get("generator") == "synthmed"


def _card_training(cfg, step: int, workdir: Path) -> str:
    o = cfg.objectives
    rows = [f"| {name} | {getattr(o, name):g} | {detail(o)} |"
            for name, detail in OBJECTIVE_DETAILS.items() if getattr(o, name)]
    lines = [
        "## Training",
        "",
        f"{step:,} of {cfg.train.num_steps:,} steps at a global batch of "
        f"{cfg.train.batch_size} (seed {cfg.train.seed}); AdamW, peak learning rate "
        f"{cfg.optim.learning_rate:g} after {cfg.optim.warmup_steps} warm-up steps, weight "
        f"decay {cfg.optim.weight_decay:g}"
        + (f", parameters matching `{cfg.optim.freeze}` frozen" if cfg.optim.freeze else "")
        + (f"; started from `{cfg.init.from_}`" if cfg.init.from_ else "")
        + (f"; report encoder from `{cfg.init.text_from}`" if cfg.init.text_from else "") + ".",
        "",
        f"Objectives ({o.weighting} weighting):",
        "",
        "| objective | weight | what |",
        "|---|---|---|",
        *rows,
    ]
    logged = _last_logged(workdir / "metrics.jsonl", step)
    if logged:
        lines += ["", f"Training loss at step {logged['step']:,}: {logged['loss']:.4f}."]
    return "\n".join(lines)


def _last_logged(path: Path, step: int) -> dict | None:
    """The last metrics.jsonl row with a training loss at or before `step`."""
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and r.get("step", 0) <= step]
    return rows[-1] if rows else None


def _card_metrics(cfg, step: int, workdir: Path) -> str:
    from mmjax.eval import registry
    from mmjax.eval.summary import format_results

    lines = ["## Held-out metrics", ""]
    results = {}
    for path in sorted((workdir / "eval").glob("*.json")):
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and isinstance(stored.get("metrics"), dict):
            results[path.stem] = stored
    if not results:
        return "\n".join(lines + [f"None recorded in {workdir}/eval; run `mmjax eval "
                                  "--workdir W` before exporting to have them here."])
    lines.append(f"On the `{cfg.data.eval_split}` split of `{cfg.data.path}`, never trained "
                 "on (from the workdir's eval/*.json):")
    for name, stored in results.items():
        when = stored.get("step")
        note = "" if when == step else f" — **at step {when}, not the exported {step}**"
        try:
            text = format_results({name: stored["metrics"]})
        except (KeyError, TypeError, ValueError):  # a layout the summary does not know
            text = "\n".join(f"{k}: {v:.4g}" for k, v in
                             registry.scalars({name: stored["metrics"]}).items())
        lines += ["", f"**{name}** (step {when}){note}", "", "```", text, "```"]
    return "\n".join(lines)


def _card_use(cfg, info: dict, synthetic: bool) -> str:
    limitations = [
        "**Not for clinical use.** This is a research artifact, not a medical device; it "
        "has not been validated for diagnosis, triage or any patient-care decision.",
        "Embeddings are not calibrated: a cosine similarity is not a probability, and the "
        "contrastive scale and bias in export.json reproduce training logits, not risks.",
        "Distribution shift: inputs must be prepared as export.json describes (same sizes, "
        "standardisation, ECG leads and rate, tokenizer); other scanners, protocols, "
        "populations, languages or report styles will degrade the embeddings unmeasured.",
        f"Reports beyond {cfg.data.max_text_len} tokens are cut; only what the training "
        "reports and labels covered can be expected to be encoded.",
        "Held-out metrics come from the same dataset as training and do not show "
        "performance elsewhere; small evaluation sets give wide uncertainty.",
    ]
    if synthetic:
        limitations.insert(0, "**Trained on synthetic data** (SynthMed): the model has never "
                              "seen a real patient, image, ECG or report.")
    first = next(iter(info["modalities"]))
    return "\n".join([
        "## Intended use",
        "",
        "Research: extracting embeddings for cross-modal retrieval, linear probing, "
        "clustering or similarity search on data prepared like the training data, and "
        "studying multimodal pretraining.",
        "",
        "## Limitations",
        "",
        *(f"- {line}" for line in limitations),
        "",
        "## Use",
        "",
        "```python",
        "from mmjax.export import load  # needs jax, numpy, safetensors, tokenizers",
        "",
        "model = load('EXPORT_DIR')",
        "texts = model.embed_text(['no acute findings'])  # [1, "
        f"{cfg.model.embed_dim}]",
        f"x = model.embed('{first}', ...)  # inputs as export.json describes",
        "similarity = x @ texts.T",
        "```",
    ])


# ---- Loading, without the model code.


class ExportedModel:
    """The embedding functions of an export, each jitted once per batch size."""

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
        arrays = [x.astype(spec["dtype"], copy=False) for x, spec in zip(arrays, specs,
                                                                         strict=True)]
        return np.asarray(function(self._params[modality], *arrays))

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


def load(directory: str | Path) -> ExportedModel:
    """An export written by `export`, every file checked against its export.json."""
    directory = Path(directory)
    info = json.loads(_read(directory / EXPORT_JSON))
    if info.get("format") != FORMAT or info.get("version", math.inf) > VERSION:
        raise ValueError(f"{directory / EXPORT_JSON} is not a {FORMAT} of version <= "
                         f"{VERSION} (format {info.get('format')!r}, version "
                         f"{info.get('version')!r})")
    files = {name: _read(directory / name) for name in info["files"]}
    for name, digest in info["files"].items():
        if _sha256(files[name]) != digest:
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
