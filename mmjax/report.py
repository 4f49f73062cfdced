"""One self-contained HTML page about one or more runs (`mmjax report`): configuration,
training curves, evaluation tables, ROC curves and examples.

Figures are embedded as base64 PNGs and there is no JavaScript, so the file can be mailed,
archived next to a checkpoint and read offline. Every part is built from files a run leaves
in its workdir; a part whose file is missing or malformed says so in one line instead of
failing the page, so a report can be made of a run that is still training.
"""

import base64
import dataclasses
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flax import traverse_util
from matplotlib import image as mpl_image
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to pick
from matplotlib.ticker import MaxNLocator

from mmjax import config as config_lib
from mmjax import storage
from mmjax.eval.auc import roc_auc, roc_curve

DPI = 90
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }
section.run { border-top: 3px solid #333; margin-top: 2em; }
h1 small, h3 small { color: #666; font-weight: normal; font-size: 60%; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; vertical-align: top; text-align: left; }
td.text { white-space: pre-wrap; max-width: 30em; }
caption { text-align: left; color: #444; }
img { max-width: 100%; }
img.thumb { width: 128px; image-rendering: pixelated; }
li.correct { background: #d4f7d4; }
p.unavailable { color: #a00; }
"""
# Evaluators whose metrics read best as a table per modality (pair), and its caption.
TABLE_PER_KEY = {"retrieval": "{}", "probe": "{}, by fraction of the training labels"}
RECONSTRUCTION_ROWS = {"original": "original", "masked": "visible patches",
                       "reconstruction": "reconstruction"}


def write_report(workdirs: list[Path], out: Path | None = None) -> Path:
    """Writes the page for `workdirs` (one group of sections each, in order) to `out`,
    by default workdirs[0]/report.html, and returns its path."""
    if buckets := [str(w) for w in workdirs if storage.is_bucket(w)]:
        raise config_lib.ConfigError(f"{buckets[0]}: the report reads local workdirs; copy "
                                     "it first (e.g. gcloud storage cp -r)")
    workdirs = [Path(w) for w in workdirs]
    if not workdirs:
        raise ValueError("write_report needs at least one workdir")
    for path in (p for w in workdirs for p in (w, w / "config.json", w / "metrics.jsonl")):
        if not path.exists():
            raise FileNotFoundError(f"not a run workdir: {path} does not exist")
    out = Path(out) if out else workdirs[0] / "report.html"
    runs = [_Run.read(w) for w in workdirs]
    contents = "".join(f'<li><a href="#run-{i}">{_e(r.name)}</a> <small>{_e(r.workdir)}</small>'
                       f"</li>" for i, r in enumerate(runs))
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>mmjax report: {_e(', '.join(r.name for r in runs))}</title>"
            f"<style>{STYLE}</style></head><body>\n<ul>{contents}</ul>\n"
            + "\n".join(_run_sections(i, r) for i, r in enumerate(runs)) + "\n</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


@dataclasses.dataclass
class _Run:
    workdir: Path
    name: str
    rows: list[dict]  # metrics.jsonl
    bad_lines: list[int]  # of metrics.jsonl, e.g. half a line from a run killed mid-write

    @classmethod
    def read(cls, workdir: Path) -> "_Run":
        try:
            name = str(json.loads((workdir / "config.json").read_text())["name"])
        except Exception:  # the header section says what is wrong with config.json
            name = workdir.name
        rows, bad = [], []
        text = (workdir / "metrics.jsonl").read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
                row["step"] = int(row["step"])
                rows.append(row)
            except (ValueError, KeyError, TypeError):
                bad.append(number)
        return cls(workdir, name, rows, bad)


def _run_sections(index: int, run: _Run) -> str:
    w, examples = run.workdir, "the {0} evaluator writes {1} (eval.{0}.examples > 0)".format
    parts = [
        ("Run", [w / "config.json"], lambda p: _header(p, run), ""),
        ("Training curves", [w / "metrics.jsonl"], lambda p: _curves(p, run), ""),
        ("Evaluation metrics", [p for p in _files(w, "eval/*.json") if "_examples" not in p.name],
         _metrics, "no eval/<evaluator>.json: no evaluator has run"),
        ("ROC curves", _files(w, "eval/zeroshot*_*.npz", "eval/diagnosis*.npz"), _roc,
         "no eval/zeroshot_<modality>.npz or eval/diagnosis.npz: the zeroshot and diagnosis "
         "evaluators write them"),
        ("Retrieval examples", _files(w, "eval/retrieval*_examples_*.json"), _retrieval_examples,
         "no eval/retrieval_examples_<modality>.json: " + examples("retrieval", "them")),
        ("MAE reconstructions", _files(w, "eval/reconstruction*_image.npz"), _reconstructions,
         "no eval/reconstruction_image.npz: " + examples("reconstruction", "it")),
        ("Generated reports", _files(w, "eval/generation*_examples.json"), _generation_examples,
         "no eval/generation_examples.json: " + examples("generation", "it")),
    ]
    body = "".join(f"<h2>{title}</h2>\n" + ("".join(_guarded(p, render) for p in files)
                                            or _unavailable(missing))
                   for title, files, render, missing in parts)
    return (f'<section class="run" id="run-{index}"><h1>{_e(run.name)} '
            f"<small>{_e(w)}</small></h1>\n{body}</section>")


def _files(workdir: Path, *patterns: str) -> list[Path]:
    return [p for pattern in patterns for p in sorted(workdir.glob(pattern))]


def _guarded(path: Path, render: Callable[[Path], str]) -> str:
    """render(path), or a line naming the file and what is wrong with it."""
    try:
        return render(path)
    except Exception as e:  # a malformed file costs its part of the page, not the page
        return _unavailable(f"{path}: {type(e).__name__}: {e}")


# ---- Sections.


def _header(path: Path, run: _Run) -> str:
    """The settings that tell runs apart, then the whole config.json folded away."""
    text = path.read_text()
    cfg = config_lib.from_dict(json.loads(text))
    encoders = {"image": cfg.model.image, "report": cfg.model.text, "video": cfg.model.video,
                "signal": cfg.model.signal}
    o = cfg.objectives
    details = {  # objective weights by name, with what tells two runs of one apart
        "contrastive": f"{o.contrastive_loss}, {', '.join(o.contrastive_pairs)}",
        "mlm": f"{o.mlm_probability:g} masked",
        "mae": f"{', '.join(o.mae_modalities)}, {o.mae_mask_ratio:g} masked",
        "matching": o.matching_pair,
        "caption": "",
        "diagnosis": o.diagnosis_loss,
        "risk": "",
    }
    steps = [r["step"] for r in run.rows]
    rows = {
        "step": f"{max(steps)} of {cfg.train.num_steps}" if steps else "n/a",
        "dataset": cfg.data.path or "(not set)",
        **{f"{m} encoder": _encoder_summary(cfg.model, m, e)
           for m, e in encoders.items() if m in cfg.data.modalities},
        "fusion": f"{cfg.model.fusion.kind}, width {cfg.model.fusion.width}, "
                  f"depth {cfg.model.fusion.depth}",
        "embedding": cfg.model.embed_dim,
        "objectives": "; ".join(f"{k} × {getattr(o, k):g}" + (f" ({d})" if d else "")
                                for k, d in details.items() if getattr(o, k)),
        "batch size": cfg.train.batch_size,
        "learning rate": f"{cfg.optim.learning_rate:g}, {cfg.optim.warmup_steps} warmup steps",
        "initialised from": cfg.init.from_ or "scratch",
        "evaluators": ", ".join(cfg.eval.evaluators),
    }
    return (_table("", {"": rows}, header=False)
            + f"<details><summary>config.json</summary><pre>{_e(text)}</pre></details>")


def _encoder_summary(model, modality: str, transformer) -> str:
    """A CNN's kind, width and stages; a transformer's width, depth and heads."""
    kind = config_lib.encoder_kind(model, modality)
    cnn = {"resnet": model.cnn, "vgg": model.cnn, "xresnet1d": model.signal_cnn}.get(kind)
    if cnn:
        return f"{kind}, width {cnn.width}, stages {', '.join(map(str, cnn.stages))}"
    e = transformer
    return f"width {e.width}, depth {e.depth}, {e.num_heads} heads"


def _curves(path: Path, run: _Run) -> str:
    """Losses, the other training scalars, and the eval metrics logged during training."""
    keys = list(dict.fromkeys(k for r in run.rows for k in r if k != "step"))
    losses = [k for k in keys if k == "loss" or k.startswith("loss/")]
    evals = [k for k in keys if k.startswith("eval/") and _series(run.rows, k)[0]]
    others = sorted((k for k in keys if k not in losses and k not in evals),
                    key=lambda k: k != "learning_rate")
    parts = [_unavailable(f"{path}: skipped malformed lines {run.bad_lines}")
             if run.bad_lines else ""]
    for title, keys_ in (("Losses", losses), ("Learning rate and other training scalars",
                                              others)):
        panels = {k: [k] for k in keys_ if _series(run.rows, k)[0]}
        parts.append(f"<h3>{title}</h3>" + (_line_plots(run.rows, panels) if panels else
                                            _unavailable(f"{path} has no such rows")))
    eval_steps = sorted({r["step"] for r in run.rows if any(k.startswith("eval/") for k in r)})
    parts.append("<h3>Evaluation during training</h3>")
    panels = _eval_panels(run.rows, evals) if len(eval_steps) > 1 else {}
    if panels:
        parts.append(_line_plots(run.rows, panels))
    elif eval_steps:
        at_step = {k: v for r in run.rows if r["step"] == eval_steps[-1] for k, v in r.items()}
        parts.append(_table(f"step {eval_steps[-1]}", {"": {
            k.removeprefix("eval/"): at_step[k] for k in evals if k in at_step}}))
    else:
        parts.append(_unavailable(f"{path} has no eval/ rows: they are logged every "
                                  "eval.<evaluator>.every steps and after the last"))
    return "".join(parts)


def _metrics(path: Path) -> str:
    """retrieval and probe: a table per modality (pair); any other evaluator: one table."""
    record = json.loads(path.read_text())
    if not (isinstance(record, dict) and isinstance(record.get("metrics"), dict)):
        raise ValueError('expected {"step": ..., "metrics": {...}}')
    name, metrics = path.stem, record["metrics"]
    kind = name.partition("@")[0]  # `kind@split` runs are tabled like their kind
    tables = ([_table(TABLE_PER_KEY[kind].format(k), v) for k, v in metrics.items()]
              if kind in TABLE_PER_KEY else [_table("", metrics)])
    return f"<h3>{_e(name)} <small>step {_e(record['step'])}</small></h3>" + "".join(tables)


def _roc(path: Path) -> str:
    with np.load(path) as arrays:
        labels, scores, names = arrays["labels"].astype(bool), arrays["scores"], arrays["names"]
    if labels.ndim != 2 or scores.shape != labels.shape or names.shape != labels.shape[1:]:
        raise ValueError(f"labels {labels.shape}, scores {scores.shape} and names "
                         f"{names.shape} do not agree")
    fig, axes = _grid(len(names))
    for ax, name, y, s in zip(axes, names, labels.T, scores.T, strict=True):
        auc = roc_auc(y, s)
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        ax.plot(*roc_curve(y, s), lw=1.2)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.set_xlabel("false positive rate", fontsize=7)
        ax.set_ylabel("true positive rate", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(f"{name}: AUC {_cell(None if math.isnan(auc) else auc)}", fontsize=8)
    return f"<h3>{_e(path.name)} <small>{len(labels)} examples</small></h3>{_img(fig)}"


def _retrieval_examples(path: Path) -> str:
    """Each query beside its own report and the top reports retrieved for it."""
    examples = json.loads(path.read_text())
    modality = path.stem.rpartition("_examples_")[2]
    images, note = [], ""
    if modality == "image":
        try:
            with np.load(path.with_suffix(".npz")) as arrays:
                images = [_img(image, "thumb") for image in arrays["images"]]
        except Exception as e:  # the reports are still worth showing
            note = _unavailable(f"{path.with_suffix('.npz')}: {type(e).__name__}: {e}")
    rows = []
    for i, example in enumerate(examples):
        candidates = "".join(
            f'<li{" class=correct" if c["correct"] else ""}>{_e(c["report"])} '
            f"<small>({c['score']:.3f})</small></li>" for c in example["candidates"])
        query = images[i] if i < len(images) else f"{_e(modality)} #{_e(example['index'])}"
        rows.append(f"<tr><td>{query}</td><td class=text>{_e(example['report'])}</td>"
                    f"<td class=text><ol>{candidates}</ol></td></tr>")
    return (f"<h3>{_e(modality)} → report</h3>{note}<table><tr><th>query</th><th>its report"
            f"</th><th>top reports retrieved (correct one highlighted; score)</th></tr>"
            + "".join(rows) + "</table>")


def _reconstructions(path: Path) -> str:
    """Rows of original / visible patches / reconstruction, each image rescaled to its own
    range (they are standardised pixels)."""
    with np.load(path) as arrays:
        grid = {label: arrays[key] for key, label in RECONSTRUCTION_ROWS.items()}
    shapes = [a.shape for a in grid.values()]
    if len(set(shapes)) != 1 or len(shapes[0]) != 4 or not shapes[0][0]:
        raise ValueError(f"expected three [K, H, W, C] arrays of one shape, got {shapes}")
    count = shapes[0][0]
    fig = Figure(figsize=(1.3 * count + 0.5, 4.2), layout="constrained")
    axes = fig.subplots(3, count, squeeze=False)
    for ax_row, (label, images) in zip(axes, grid.items(), strict=True):
        ax_row[0].set_ylabel(label, fontsize=8)
        for ax, image in zip(ax_row, images, strict=True):
            low, high = image.min(), image.max()
            _imshow(ax, (image - low) / max(high - low, 1e-6))
            ax.set(xticks=[], yticks=[])
    return _img(fig)


def _generation_examples(path: Path) -> str:
    examples = json.loads(path.read_text())
    return _text_table(["index", "reference", "greedy", "beam"], examples)


# ---- Tables.


def _table(title: str, metrics: dict, header: bool = True) -> str:
    """The dict-valued entries of `metrics` as columns (flattened), its other entries in
    the caption; a dict of scalars only is one column."""
    columns = {k: traverse_util.flatten_dict(v, sep="/") for k, v in metrics.items()
               if isinstance(v, dict)}
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if not columns:
        columns, scalars = {"value": scalars}, {}
    caption = ", ".join(([title] if title else [])
                        + [f"{_label(k)} {_cell(v)}" for k, v in scalars.items()])
    rows = list(dict.fromkeys(r for c in columns.values() for r in c))
    head = "<tr><th></th>" + "".join(f"<th>{_e(_label(c))}</th>" for c in columns) + "</tr>"
    body = "".join(f"<tr><th>{_e(_label(r))}</th>" + "".join(
        f"<td>{_e(_cell(c[r])) if r in c else ''}</td>" for c in columns.values()) + "</tr>"
                   for r in rows)
    caption = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{caption}{head if header else ''}{body}</table>"


def _text_table(columns: list[str], records: list[dict]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td class=text>{_e(r[c])}</td>" for c in columns)
                   + "</tr>" for r in records)
    return f"<table><tr>{head}</tr>{body}</table>"


def _label(key) -> str:
    return str(key).replace("_", " ")


def _cell(value) -> str:
    """null (an AUC without both classes) is 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):  # names, or an interval's two ends
        return ", ".join(map(_cell, value))
    return str(value)


def _e(value) -> str:
    return html.escape(str(value))


def _unavailable(why: str) -> str:
    return f'<p class="unavailable">not available: {_e(why)}</p>\n'


# ---- Figures.


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of `key`, the last logged per step (a resumed run logs some again)."""
    points = {r["step"]: r[key] for r in rows if isinstance(r.get(key), int | float)}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _eval_panels(rows: list[dict], keys: list[str]) -> dict[str, list[str]]:
    """Eval keys by panel: siblings share one when all are fractions (recall, AUC, F1);
    anything else (a rank, a log-likelihood) gets its own so the scales do not clash.
    Example counts and chance are constant and left out."""
    panels = {}
    for key in keys:
        parent, leaf = key.rsplit("/", 1)
        if leaf in ("num_examples", "num_labelled", "num_without_inputs") or "/chance/" in key:
            continue
        values = _series(rows, key)[1]
        fractions = all(0 <= v <= 1 for v in values)
        panels.setdefault(parent if fractions else key, []).append(key)
    return panels


def _line_plots(rows: list[dict], panels: dict[str, list[str]]) -> str:
    """Small multiples: one panel per entry, one line per key in it."""
    fig, axes = _grid(len(panels))
    for ax, (panel, keys) in zip(axes, panels.items(), strict=True):
        for key in keys:
            ax.plot(*_series(rows, key), lw=1, label=key[len(panel) + 1:] or key)
        ax.set_title((keys[0] if len(keys) == 1 else panel).removeprefix("eval/"), fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=6)
    return _img(fig)


def _grid(count: int, columns: int = 4) -> tuple[Figure, list]:
    rows, columns = math.ceil(count / columns), min(count, columns)
    fig = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes[:count]


def _imshow(ax, image: np.ndarray) -> None:
    """[H, W, 1] as grey, [H, W, 3] as colour."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))


def _img(figure_or_image, css_class: str = "") -> str:
    """An <img> with the PNG inline: a Figure, or an image [H, W, C] in [0, 1]."""
    buffer = io.BytesIO()
    if isinstance(figure_or_image, Figure):
        figure_or_image.savefig(buffer, format="png", dpi=DPI)
    else:
        image = np.clip(np.asarray(figure_or_image, np.float32), 0, 1)
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise ValueError(f"expected an image [H, W, 1 or 3], got {image.shape}")
        mpl_image.imsave(buffer, image[..., 0] if image.shape[-1] == 1 else image,
                         format="png", cmap="gray", vmin=0, vmax=1)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    css = f' class="{css_class}"' if css_class else ""
    return f'<img{css} src="data:image/png;base64,{data}" alt="">'
