"""The input sizes a plan is for: from the dataset's manifest and tokenizer, or assumed
(`--shape`), and an example batch of those sizes laid out as the pipeline lays it out."""

import dataclasses

import numpy as np

from mmjax import storage
from mmjax.config import Config, ConfigError
from mmjax.data import heart_sounds, pipeline, schema, shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.schema import MODALITIES


@dataclasses.dataclass(frozen=True)
class InputShapes:
    """Per-example input sizes; defaults are `mmjax data synthmed`'s."""

    image_size: int = 64  # image and video frame side
    channels: int = 1
    frames: int = 16
    signal_samples: int = 1000  # 10 s at 100 Hz
    audio_samples: int = round(heart_sounds.AUDIO_RATE_HZ * heart_sounds.AUDIO_SECONDS)
    audio_rate_hz: int = heart_sounds.AUDIO_RATE_HZ
    text_len: int = 96
    vocab_size: int = 1024
    num_labels: int = 0

    def sizes(self) -> dict[str, int]:
        """The letters of schema.MODEL_INPUTS and TARGETS."""
        return {"S": self.image_size, "C": self.channels, "T": self.frames,
                "N": self.signal_samples, "A": self.audio_samples, "L": self.text_len,
                "F": self.num_labels}


SHAPE_KEYS = tuple(f.name for f in dataclasses.fields(InputShapes))


def has_dataset(path: str) -> bool:
    """Whether `path` holds a dataset the planner can read its shapes from."""
    return bool(path) and (storage.path(path) / shards.MANIFEST).is_file()


def input_shapes_from_manifest(dataset_dir, cfg: Config,
                               fallback: InputShapes = InputShapes()) -> InputShapes:
    """The shapes the pipeline feeds for `cfg` from a dataset's manifest and tokenizer;
    fields the dataset lacks keep `fallback`'s."""
    manifest = shards.read_manifest(dataset_dir)
    fields = {name: spec["shape"] for name, spec in manifest.fields.items()}
    data, rates = dataclasses.replace(cfg.data, path=str(dataset_dir)), manifest.attributes
    shapes = dataclasses.replace(fallback, text_len=data.max_text_len,
                                 num_labels=len(manifest.label_names))
    frame = fields.get("image") or (fields["video"][1:] if "video" in fields else None)
    if frame:
        shapes = dataclasses.replace(shapes, image_size=frame[0], channels=frame[-1])
    if "image" in fields:  # what the pipeline feeds: resized and replicated as configured
        size, _, channels = pipeline.image_shape(data, tuple(fields["image"]))
        shapes = dataclasses.replace(shapes, image_size=size, channels=channels)
    if "video" in fields:
        shapes = dataclasses.replace(shapes, frames=data.video_frames or fields["video"][0])
    if "signal" in fields:
        shapes = dataclasses.replace(shapes, signal_samples=_crop(
            "signal", data.signal_seconds, rates.get("signal_rate_hz"), fields["signal"][0]))
    if "audio" in fields:
        rate = rates.get("audio_rate_hz")
        shapes = dataclasses.replace(
            shapes, audio_rate_hz=rate or shapes.audio_rate_hz,
            audio_samples=_crop("audio", data.audio_seconds, rate, fields["audio"][0]))
    if data.tokenizer or (storage.path(dataset_dir) / tokenizer_lib.DATASET_FILE).is_file():
        shapes = dataclasses.replace(
            shapes, vocab_size=pipeline.load_tokenizer(data).get_vocab_size())
    return shapes


def _crop(modality: str, seconds: float, rate_hz: float | None, stored: int) -> int:
    """The pipeline's crop: data.<modality>_seconds at the dataset's rate, else all samples."""
    if not seconds:
        return stored
    if not rate_hz:
        raise ConfigError(f"data.{modality}_seconds is set but the dataset has no "
                          f"{modality}_rate_hz")
    return int(round(seconds * rate_hz))


def shape_overrides(assignments, base: InputShapes = InputShapes()) -> InputShapes:
    """`base` with 'key=value' sizes replaced, e.g. image_size=224 (the CLI's --shape)."""
    sizes = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if key not in SHAPE_KEYS:
            raise ConfigError(f"--shape {assignment}: '{key}' is not one of "
                              f"{', '.join(SHAPE_KEYS)}")
        try:
            sizes[key] = int(value)
        except ValueError:
            raise ConfigError(f"--shape {assignment}: '{value}' is not an integer") from None
    return dataclasses.replace(base, **sizes)


def input_shapes(cfg: Config, fallback: InputShapes | None = None) -> InputShapes:
    """From data.path's manifest when there is one; else `fallback` (default sizes when
    data.path is empty) at data.max_text_len. A data.path without a dataset and no
    fallback is an error: planning 64 px images for a 224 px dataset would be wrong."""
    if has_dataset(cfg.data.path):
        return input_shapes_from_manifest(cfg.data.path, cfg, fallback or InputShapes())
    if cfg.data.path and fallback is None:
        raise ConfigError(f"data.path {cfg.data.path} has no {shards.MANIFEST} to plan "
                          "with: write the dataset there, or assume sizes with --shape "
                          "KEY=VALUE or --set data.path=")
    return dataclasses.replace(fallback or InputShapes(), text_len=cfg.data.max_text_len)


def format_shapes(shapes: InputShapes) -> str:
    return ", ".join(f"{key} {getattr(shapes, key)}" for key in SHAPE_KEYS)


# Length fields an example batch fills to the whole input (zeros would mean "empty").
FULL_LENGTHS = {"audio_length": "A"}


def example_batch(shapes: InputShapes, modalities, batch_size: int = 1) -> dict:
    """Zero inputs and targets laid out by schema.batch_layout, with every modality,
    token, frame, lead and label present."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
    sizes, batch = shapes.sizes(), {}
    for name, (dtype, shape) in schema.batch_layout(modalities, sizes).items():
        fill = 1 if dtype == "bool" else sizes.get(FULL_LENGTHS.get(name), 0)
        batch[name] = np.full((batch_size, *shape), fill, dtype)
    return batch
