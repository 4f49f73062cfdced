"""A dataset at a glance: counts, missing modalities, label prevalence, an example grid."""

import textwrap
from pathlib import Path

import numpy as np

from mmjax.data import schema
from mmjax.data.shards import ShardedSource, read_manifest

GRID_EXAMPLES = 6
TARGETS = ("risk", "age", "sex")  # per-record values a manifest may leave blank


def summarize(directory: str | Path) -> dict:
    """Per split: records, presence rate per modality and per risk/age/sex, prevalence per
    label."""
    manifest = read_manifest(directory)
    summary = {"name": manifest.name, "splits": {}}
    for split in manifest.splits:
        source = ShardedSource(directory, split)
        present = {m: 0 for m in (*schema.MODALITIES, *TARGETS) if m in manifest.fields}
        label_counts = np.zeros(len(manifest.label_names))
        labelled = 0
        for i in range(len(source)):
            record = source[i]
            for modality in present:
                present[modality] += modality in record
            if "labels" in record:
                label_counts += record["labels"]
                labelled += 1
        n = max(len(source), 1)
        summary["splits"][split] = {
            "records": len(source),
            "present": {m: count / n for m, count in present.items()},
            "label_prevalence": dict(
                zip(manifest.label_names, (label_counts / max(labelled, 1)).tolist(), strict=True)
            ),
        }
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"dataset {summary['name']}"]
    for split, info in summary["splits"].items():
        lines.append(f"  {split}: {info['records']} records")
        for modality, rate in info["present"].items():
            lines.append(f"    {modality:<8} present {rate:6.1%}   missing {1 - rate:6.1%}")
        for label, rate in info["label_prevalence"].items():
            lines.append(f"    label {label:<28} {rate:6.1%}")
    return "\n".join(lines)


def plot_examples(directory: str | Path, out_png: str | Path, split: str = "train") -> Path:
    """One row per example: image, middle video frame, ECG lead II, audio, report text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = example_figure(ShardedSource(directory, split))
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def example_figure(source, count: int = GRID_EXAMPLES):
    """The grid of `plot_examples`: an absent modality says so in its panel; the ECG and
    audio have time in seconds (at the manifest's rates) and their units on the axes."""
    import matplotlib.pyplot as plt

    count = min(count, len(source))
    rates = source.manifest.attributes
    fig, axes = plt.subplots(count, 5, figsize=(17, 2.4 * count), squeeze=False)
    lead_ii = schema.ECG_LEADS.index("II")
    for row in range(count):
        record = source[row]
        image_ax, video_ax, signal_ax, audio_ax, text_ax = axes[row]
        if "image" in record:
            image_ax.imshow(record["image"][..., 0], cmap="gray")
        if "video" in record:
            video = record["video"]
            video_ax.imshow(video[len(video) // 2, ..., 0], cmap="gray")
        if "signal" in record:
            _trace(signal_ax, record["signal"][:, lead_ii], rates.get("signal_rate_hz"), "mV",
                   lw=0.6)
        if "audio" in record:
            length = int(record.get("audio_length", len(record["audio"])))
            _trace(audio_ax, record["audio"][:length], rates.get("audio_rate_hz"), "amplitude",
                   lw=0.3)
        text_ax.text(0, 1, _wrap(record.get("report", "(no report)")), va="top", fontsize=6,
                     family="monospace")
        panels = (("image", "image"), ("video", "video (mid frame)"),
                  ("signal", "ECG lead II"), ("audio", "audio"))
        for ax, (field, title) in zip(axes[row], panels, strict=False):
            ax.set_title(title, fontsize=7)
            if field not in record:
                ax.text(0.5, 0.5, f"no {field}", ha="center", va="center", fontsize=8,
                        color="grey", transform=ax.transAxes)
            if field not in record or field in ("image", "video"):
                ax.set_xticks([])
                ax.set_yticks([])
        text_ax.set_title(record.get("patient_id", ""), fontsize=7)
        text_ax.set_axis_off()
    fig.tight_layout()
    return fig


def _trace(ax, values, rate_hz, unit: str, **style) -> None:
    values = np.asarray(values, np.float32)
    seconds = np.arange(len(values)) / rate_hz if rate_hz else np.arange(len(values))
    ax.plot(seconds, values, **style)
    ax.set_xlabel("s" if rate_hz else "sample", fontsize=6)
    ax.set_ylabel(unit, fontsize=6)
    ax.tick_params(labelsize=6)


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(textwrap.wrap(text, width))
