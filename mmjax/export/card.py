"""MODEL_CARD.md of an export: model, training data, training, held-out metrics, intended
use and limitations, all read from the workdir and its config."""

import dataclasses
import json
import math
from pathlib import Path

import jax
import numpy as np

ENCODER_CONFIG = {"image": "image", "video": "video", "signal": "signal", "audio": "audio",
                  "report": "text"}


def count_params(tree) -> int:
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree))

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


def model_card(ctx, workdir: Path, params: dict, info: dict, manifest) -> str:
    from mmjax.trained import IMPORTED_FILE  # the writer's side: it has the model code

    cfg = ctx.cfg
    imported = workdir / IMPORTED_FILE
    history = ([_card_imported(json.loads(imported.read_text()), cfg)] if imported.is_file()
               else [_card_data(cfg, ctx.label_names, manifest),
                     _card_training(cfg, ctx.step, workdir)])
    sections = [
        f"# Model card: {cfg.name} (mmjax export, step {ctx.step})",
        _card_model(cfg, params, info),
        *history,
        _card_metrics(cfg, ctx.step, workdir),
        _card_use(cfg, info, _synthetic(manifest)),
    ]
    return "\n\n".join(sections) + "\n"


def _card_imported(source: dict, cfg) -> str:
    """An imported model was trained elsewhere: where it came from, not mmjax's training."""
    return "\n".join([
        "## Origin", "",
        f"Imported with `mmjax import` from `{source['source']}` ({source['family']} layout), "
        "unchanged: its training data, training and license are those of the source model "
        "(see its own model card). Exported at the shapes of the dataset at "
        f"`{cfg.data.path}`."])


def _architecture(model_cfg, modality: str) -> str:
    """The encoder's settings in one line; a CNN's (and a frame encoder's) named as such."""
    encoder = getattr(model_cfg, ENCODER_CONFIG[modality])
    arch = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(encoder).items())
    kind = {"image": model_cfg.image_encoder,
            "video": model_cfg.video.encoder == "frames" and model_cfg.video.frame_encoder}
    cnn = kind.get(modality) in ("resnet", "vgg")
    if cnn and modality == "image":
        return f"{kind[modality]}: " + ", ".join(
            f"{k} {v}" for k, v in dataclasses.asdict(model_cfg.cnn).items())
    if cnn:
        return arch + f"; frames through {kind[modality]} (model.cnn)"
    if modality == "signal" and model_cfg.signal.encoder == "xresnet1d":
        return "xresnet1d: " + ", ".join(
            f"{k} {v}" for k, v in dataclasses.asdict(model_cfg.signal_cnn).items())
    return arch


def _card_model(cfg, params: dict, info: dict) -> str:
    rows = []
    for modality, entry in info["modalities"].items():
        arch = _architecture(cfg.model, modality)
        inputs = "; ".join(f"`{i['name']}` {i['dtype']} [{', '.join(map(str, i['shape']))}]"
                           for i in entry["inputs"])
        rows.append(f"| {modality} | {arch} | {inputs} | {entry['num_params']:,} |")
    return "\n".join([
        "## Model",
        "",
        f"One encoder per modality, each followed by a linear projection to a "
        f"shared {cfg.model.embed_dim}-dimensional space; embeddings are L2-normalised, so "
        f"the dot product of two is their cosine similarity. Compute dtype {cfg.model.dtype}, "
        f"parameters {cfg.model.param_dtype}.",
        "",
        "| encoder | architecture | inputs (batch is any size) | parameters (with projection) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Exported: {sum(e['num_params'] for e in info['modalities'].values()):,} parameters. "
        f"The trained model had {count_params(params):,} in all; its fusion and task heads "
        f"are not exported. Functions are StableHLO (jax.export, jax {info['jax_version']}) "
        f"for {', '.join(info['platforms'])}.",
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


