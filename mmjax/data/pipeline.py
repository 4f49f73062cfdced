"""The input pipeline: shards -> per-host, shuffled, augmented, fixed-shape batches.

Built on grain's random-access MapDataset: the batch at step s is `dataset[s]`, a
pure function of (seed, s, host), so the iterator's whole state is the next step.
Every example gets a presence flag per modality; absent ones are zero-filled and
must be masked by whoever consumes them. Eval batches are padded with a `valid`
mask so each example is counted exactly once on any number of hosts.
"""

import dataclasses
import sys
from typing import Any

import grain
import numpy as np
from absl import flags
from PIL import Image

from mmjax import storage
from mmjax.config import ConfigError, DataConfig
from mmjax.data import filters, schema
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.shards import ShardedSource

READ_THREADS, PREFETCH = 2, 4  # batches being prepared ahead of the train step

# Intensity augmentation ranges for radiograph-like images.
CROP_SCALE = (0.8, 1.0)
BRIGHTNESS = 0.1
CONTRAST = (0.8, 1.2)
GAMMA = (0.8, 1.25)


def standardize(images: np.ndarray, axes=(-3, -2, -1)) -> np.ndarray:
    """Zero mean, unit variance per image: removes exposure and contrast differences
    between acquisitions, which otherwise dominate small findings."""
    mean = images.mean(axis=axes, keepdims=True)
    std = images.std(axis=axes, keepdims=True)
    return ((images - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def _resize(image: np.ndarray, size: int, method=Image.BILINEAR) -> np.ndarray:
    """[H, W, C] float32 -> [size, size, C]."""
    channels = [
        np.asarray(Image.fromarray(image[..., c], mode="F").resize((size, size), method))
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def image_shape(cfg: DataConfig, stored: tuple[int, ...]) -> tuple[int, int, int]:
    """The [S, S, C] a stored image of shape `stored` is fed as."""
    size = cfg.image_size or stored[0]
    return size, size, cfg.image_channels or stored[-1]


def prepare_image(image01: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """A [0, 1] image as its model takes it: resized with data.image_interpolation (the
    pretrained model's own: bicubic for CLIP, bilinear for SigLIP), grey replicated to RGB,
    then normalised by data.image_mean/std, or standardised per image when they are unset."""
    size, _, channels = image_shape(cfg, image01.shape)
    if size != image01.shape[0] or size != image01.shape[1]:
        image01 = _resize(image01, size, Image.Resampling[cfg.image_interpolation.upper()])
    if channels != image01.shape[-1]:
        if image01.shape[-1] != 1:
            raise ConfigError(f"data.image_channels={channels}: a {image01.shape[-1]}-channel "
                              "image can only be fed as stored or made RGB from grey")
        image01 = np.repeat(image01, channels, axis=-1)
    if not cfg.image_mean:
        return standardize(image01)
    mean, std = (np.asarray(v, np.float32) for v in (cfg.image_mean, cfg.image_std))
    return ((image01 - mean) / std).astype(np.float32)


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop and intensity jitter on a [0, 1] image; never a left-right
    flip, which would move the heart to the wrong side of a chest radiograph."""
    size = image.shape[0]
    crop = int(round(size * rng.uniform(*CROP_SCALE)))
    top, left = rng.integers(0, size - crop + 1, size=2)
    image = _resize(image[top : top + crop, left : left + crop], size)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(*GAMMA)
    return (image - 0.5) * rng.uniform(*CONTRAST) + 0.5 + rng.uniform(-BRIGHTNESS, BRIGHTNESS)


def _window_start(available: int, length: int, rng: np.random.Generator | None) -> int:
    """Where a window of `length` starts in `available` items: random when training,
    centred otherwise; 0 when the window takes everything."""
    if length <= 0 or length >= available:
        return 0
    return int(rng.integers(0, available - length + 1)) if rng else (available - length) // 2


def _crop(array: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """A window of `length` along axis 0."""
    start = _window_start(len(array), length, rng)
    return array[start : start + length] if length > 0 else array


@dataclasses.dataclass
class ExampleTransform:
    """Turns a stored record into fixed-shape float arrays, presence flags and tokens."""

    config: DataConfig
    fields: dict[str, dict]  # the manifest's field specs
    tokenizer: Any
    num_labels: int
    signal_rate_hz: float | None = None
    audio_rate_hz: float | None = None
    specials: tokenizer_lib.Specials | None = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        if self.tokenizer is not None:  # read once: finding them tokenizes a probe
            self.specials = tokenizer_lib.specials(self.tokenizer)

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        cfg, out = self.config, {}
        for modality in cfg.modalities:
            present = modality in record
            out[f"has_{modality}"] = np.bool_(present)
            if modality == "report":
                continue
            spec = self.fields.get(modality)
            if spec is None:
                raise ConfigError(
                    f"data.modalities asks for '{modality}' but the dataset has no such field"
                )
            out.update(self._modality(modality, record, spec, present, rng))
        if "report" in cfg.modalities:
            text = record.get("report", "")
            encoded = tokenizer_lib.encode(self.tokenizer, [text], cfg.max_text_len,
                                           self.specials)
            out["text"], out["text_mask"] = encoded.ids[0], encoded.mask[0] & bool(text)
            out["text_truncated"] = np.bool_(encoded.num_truncated)  # logged by the trainer
        labels = record.get("labels")
        out["has_labels"] = np.bool_(labels is not None)
        out["labels"] = (np.zeros(self.num_labels, np.float32) if labels is None
                         else labels.astype(np.float32))
        risk = record.get("risk")
        out["has_risk"] = np.bool_(risk is not None)
        out["risk"] = np.float32(0.0 if risk is None else risk)
        return out

    def _modality(self, modality, record, spec, present, rng) -> dict:
        shape = spec["shape"]
        if modality == "image":
            if not present:
                return {"image": np.zeros(image_shape(self.config, shape), np.float32)}
            image = schema.stored_to_image(record["image"])
            if rng is not None and self.config.augment:
                image = augment_image(image, rng)
            return {"image": prepare_image(image, self.config)}
        if modality == "video":
            return self._video(record, shape, present, rng)
        if modality == "audio":
            return self._audio(record, shape, present, rng)
        if modality == "signal":
            samples = self._signal_samples(shape[0])
            signal = (self._clean_signal(record["signal"], record.get("signal_leads"))
                      if present else np.zeros((samples, shape[1]), np.float32))
            leads = record.get("signal_leads", np.zeros(shape[1], np.uint8))
            return {"signal": _crop(signal, samples, rng if self.config.augment else None),
                    "signal_leads": leads.astype(bool)}
        raise ConfigError(f"unknown modality '{modality}' (known: {schema.MODALITIES})")

    def _video(self, record, shape, present, rng) -> dict:
        """Frames in [0, 1], standardised over the real frames, and `video_mask` [T]: which
        frames are real (a shorter stored clip is zero padded)."""
        frames = self.config.video_frames or shape[0]
        if not present:
            return {"video": np.zeros((frames, *shape[1:]), np.float32),
                    "video_mask": np.ones(frames, bool)}
        real = int(record.get("video_length", shape[0]))
        start = _window_start(min(real, shape[0]), frames,
                              rng if self.config.augment else None)
        video = record["video"][start : start + frames].astype(np.float32) / 255.0
        mask = np.arange(start, start + frames) < real
        video = np.concatenate([video, np.zeros((frames - len(video), *shape[1:]), np.float32)])
        video[mask] = standardize(video[mask], axes=(-4, -3, -2, -1))
        return {"video": video, "video_mask": mask}

    def _audio(self, record, shape, present, rng) -> dict:
        """float32 samples and `audio_length`, the real samples from the start (the rest are
        zeros); data.audio_seconds takes a window of the real part."""
        samples = shape[0]
        if self.config.audio_seconds:
            if not self.audio_rate_hz:
                raise ConfigError("data.audio_seconds is set but the dataset has no audio_rate_hz")
            samples = int(round(self.config.audio_seconds * self.audio_rate_hz))
        if not present:
            return {"audio": np.zeros(samples, np.float32), "audio_length": np.int32(samples)}
        real = int(record.get("audio_length", shape[0]))
        start = _window_start(real, samples, rng if self.config.augment else None)
        kept = record["audio"][start : min(start + samples, real)].astype(np.float32)
        out = np.zeros(samples, np.float32)
        out[: len(kept)] = kept
        return {"audio": out, "audio_length": np.int32(len(kept))}

    def _clean_signal(self, signal: np.ndarray, leads: np.ndarray | None) -> np.ndarray:
        """The whole stored signal cleaned as data.signal_* ask, before the crop, so that
        filter edge effects fall at the record's ends rather than at every window's."""
        cfg = self.config
        return filters.clean_signal(
            signal, self.signal_rate_hz, bandpass_hz=cfg.signal_bandpass_hz,
            notch_hz=cfg.signal_notch_hz, baseline=cfg.signal_baseline,
            standardize=cfg.signal_standardize, leads=leads,
        )

    def _signal_samples(self, stored: int) -> int:
        if not self.config.signal_seconds:
            return stored
        if not self.signal_rate_hz:
            raise ConfigError("data.signal_seconds is set but the dataset has no signal_rate_hz")
        return int(round(self.config.signal_seconds * self.signal_rate_hz))


def load_tokenizer(cfg: DataConfig):
    """data.tokenizer if set, else the tokenizer.json stored with the dataset."""
    if not cfg.path:
        raise ConfigError(
            "data.path is empty: write a dataset with `mmjax data synthmed --out DIR` "
            "and pass --set data.path=DIR"
        )
    return tokenizer_lib.load(cfg.tokenizer or storage.path(cfg.path) / tokenizer_lib.DATASET_FILE)


def open_source(path: str, split: str):
    """A mmjax dataset folder, or a prepared TFDS array_record dataset folder."""
    if (storage.path(path) / "dataset_info.json").is_file():
        from mmjax.data.tfds import TfdsSource  # imports TFDS only when needed

        return TfdsSource(path, split)
    return ShardedSource(path, split)


def open_split(cfg: DataConfig, split: str, tokenizer) -> tuple:
    """The source for a split and its example transform."""
    source = open_source(cfg.path, split)
    manifest = source.manifest
    transform = ExampleTransform(cfg, manifest.fields, tokenizer, len(manifest.label_names),
                                 manifest.attributes.get("signal_rate_hz"),
                                 manifest.attributes.get("audio_rate_hz"))
    return source, transform


def _stack(examples: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def train_batches(source, transform, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  fraction: float = 1.0) -> grain.MapDataset:
    """Infinite per-host batches; element s is this host's rows of global batch s.

    The global batches depend on (seed, step) alone, not on the number of hosts: the
    split's first `fraction` of examples is shuffled anew each epoch and cut into batches
    of batch_size * process_count; host i takes rows [i * batch_size, (i + 1) * batch_size)
    of each, every example transformed with the random stream of its global position. A
    run resumed on a different number of hosts sees the same examples in the same order.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.train_fraction must be in (0, 1], got {fraction}")
    used = max(int(round(fraction * len(source))), 1)
    global_size = batch_size * process_count
    if global_size > used:
        raise ConfigError(f"global batch {global_size} ({process_count} hosts × {batch_size}) "
                          f"exceeds the {used} training examples")
    examples = grain.MapDataset.source(source)[:used].shuffle(seed=seed).repeat()
    examples = examples.random_map(lambda record, rng: transform(record, rng), seed=seed)
    offset = process_index * batch_size

    def global_position(n: int) -> int:  # the host's n-th example
        return n // batch_size * global_size + offset + n % batch_size

    mine = grain.MapDataset.range(sys.maxsize).map(lambda n: examples[global_position(n)])
    return mine.batch(batch_size, drop_remainder=True, batch_fn=_stack)


def eval_batches(source, transform, batch_size: int,
                 process_index: int = 0, process_count: int = 1):
    """Every example of the split exactly once across hosts, in fixed-size batches.

    The last batches are padded with copies flagged `valid=False`; every host gets
    the same number of batches so collective steps stay in lock-step.
    """
    num_batches = -(-len(source) // (batch_size * process_count))
    indices = np.arange(num_batches * batch_size * process_count)
    mine = indices[process_index::process_count]
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        batch = _stack([transform(source[int(min(i, len(source) - 1))]) for i in chunk])
        batch["valid"] = chunk < len(source)
        batch["index"] = chunk
        yield batch


def iterate(batches: grain.MapDataset, start_step: int, workers: int = 0):
    """Iterates batches from `start_step`, prefetching in threads or worker processes."""
    read_options = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH)
    dataset = batches[start_step:].to_iter_dataset(read_options)
    if workers > 0:
        # grain reads absl flags in its workers; outside an absl app nobody parses them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(dataset)
