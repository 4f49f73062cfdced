"""Writes a SynthMed corpus as a sharded dataset with its tokenizer.

Patients are generated in chunks across worker processes (each patient depends only
on (seed, index), so chunks are independent) and written in patient order; the last
`eval_patients` patients form the held-out split. Workers are spawned, so a script
calling this with workers > 1 needs an `if __name__ == "__main__":` guard.
"""

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmjax.config import ConfigError
from mmjax.data import heart_sounds, schema, shards, synthmed
from mmjax.data import tokenizer as tokenizer_lib

CHUNK = 128


def _records(start: int, count: int, seed: int, image_size: int, frames: int,
             signal_rate_hz: int, modalities: tuple[str, ...]) -> list[dict]:
    corpus = synthmed.generate(
        count, seed, image_size, start=start, frames=frames, signal_rate_hz=signal_rate_hz,
        modalities=modalities,
    )
    records = []
    for row in range(count):
        record = {
            "patient_id": f"synthmed-{seed}-{start + row:07d}",
            "labels": corpus["labels"][row],
            "risk": corpus["risk"][row],
            "age": corpus["age"][row],
            "sex": corpus["sex"][row],
        }

        def present(modality, row=row):
            return modality in modalities and corpus[f"has_{modality}"][row]

        if present("image"):
            image = synthmed.window(corpus["image"][row])
            record["image"] = schema.image_to_stored(image)[..., None]
        if present("video"):
            record["video"] = corpus["video"][row][..., None]
        if present("signal"):
            record["signal"] = corpus["signal"][row].astype(np.float16)
            record["signal_leads"] = np.ones(len(schema.ECG_LEADS), np.uint8)
        if present("audio"):
            record["audio"] = corpus["audio"][row].astype(np.float16)
            record["audio_length"] = np.int32(len(record["audio"]))
        if present("report"):
            record["report"] = corpus["report"][row]
        records.append(record)
    return records


def _chunk(arguments) -> list[dict]:
    return _records(*arguments)


def _generated(total: int, workers: int, common: tuple, progress: bool) -> Iterator[dict]:
    chunks = [(start, min(CHUNK, total - start), *common) for start in range(0, total, CHUNK)]
    with tqdm(total=total, desc="synthmed", unit="patient", disable=not progress) as bar:
        if workers <= 1:
            results = map(_chunk, chunks)
            yield from _flatten(results, bar)
            return
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from _flatten(pool.imap(_chunk, chunks), bar)


def _flatten(results, bar) -> Iterator[dict]:
    for records in results:
        yield from records
        bar.update(len(records))


def write_synthmed(
    out: str | Path,
    patients: int,
    eval_patients: int,
    seed: int = 0,
    image_size: int = 64,
    frames: int = 16,
    signal_rate_hz: int = 100,
    modalities: tuple[str, ...] = schema.MODALITIES,
    vocab_size: int = 1024,
    workers: int = 1,
    progress: bool = True,
) -> shards.Manifest:
    if not 0 < eval_patients < patients:
        raise ConfigError(f"eval patients ({eval_patients}) must be in 1..{patients - 1}")
    unknown = set(modalities) - set(schema.MODALITIES)
    if unknown:
        raise ConfigError(f"unknown modalities {sorted(unknown)}; known: {schema.MODALITIES}")
    out = Path(out)
    common = (seed, image_size, frames, signal_rate_hz, tuple(modalities))
    records = _generated(patients, workers, common, progress)
    num_train = patients - eval_patients
    train_reports = []

    def train_split():
        for _ in range(num_train):
            record = next(records)
            if "report" in record:
                train_reports.append(record["report"])
            yield record

    def eval_split():
        yield from records

    samples = int(round(signal_rate_hz * synthmed.ECG_SECONDS))  # as synthmed.generate
    audio_samples = round(heart_sounds.AUDIO_RATE_HZ * heart_sounds.AUDIO_SECONDS)
    shapes = {"patient_id": (), "labels": (len(synthmed.FINDINGS),), "risk": (), "age": (),
              "sex": (), **schema.modality_shapes(modalities, image_size, 1, frames, samples,
                                                  audio_samples)}

    return shards.write_dataset(
        out, "synthmed", {"train": train_split(), "eval": eval_split()}, shapes,
        list(synthmed.FINDINGS),
        {"generator": "synthmed", "seed": seed, "signal_rate_hz": signal_rate_hz,
         "audio_rate_hz": heart_sounds.AUDIO_RATE_HZ,
         "video_fps": synthmed.ECHO_FPS, "image_visible_findings": list(synthmed.IMAGE_VISIBLE)},
        before_manifest=lambda directory: tokenizer_lib.save_for_dataset(
            directory, train_reports, vocab_size),
    )
