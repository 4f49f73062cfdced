"""TFDS round trip without TensorFlow."""

import sys

import numpy as np
import pytest

from mmjax.config import DataConfig
from mmjax.data import pipeline, shards
from mmjax.data import tokenizer as tokenizer_lib

tfds = pytest.importorskip("tensorflow_datasets")
from mmjax.data import tfds as mmjax_tfds  # noqa: E402


def _record(i):
    """Images absent for every third, risk for every fourth (risk 0 present for p3, p6),
    labels for p5."""
    record = {"patient_id": f"p{i}", "report": f"report {i}"}
    if i % 3:
        record["image"] = np.full((8, 8, 1), 1000 * i, np.uint16)
    if i % 4:
        record["risk"] = np.uint8(i % 3)
    if i != 5:
        record["labels"] = np.array([i % 2], np.uint8)
    return record


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    source_dir = tmp_path_factory.mktemp("mmjax_toy")
    shards.write_dataset(
        source_dir, "toy", {"train": map(_record, range(12)), "eval": map(_record, range(3))},
        {"patient_id": (), "image": (8, 8, 1), "report": (), "labels": (1,), "risk": ()},
        ["odd"],
    )
    tokenizer_lib.train([f"report {i}" for i in range(12)], 64).save(
        str(source_dir / "tokenizer.json"))
    data_dir = tmp_path_factory.mktemp("tfds")
    return source_dir, data_dir, mmjax_tfds.prepare(source_dir, data_dir)


def test_tfds_data_source_reads_what_mmjax_wrote_without_tensorflow(prepared):
    source_dir, data_dir, _ = prepared
    source = tfds.data_source("mmjax_dataset/toy", data_dir=str(data_dir))
    assert len(source["train"]) == 12 and len(source["eval"]) == 3
    by_id = {ex["patient_id"].decode(): ex for ex in (source["train"][i] for i in range(12))}
    original = shards.ShardedSource(source_dir, "train")
    for i in range(12):
        record, example = original[i], by_id[f"p{i}"]
        assert bool(example["has_image"]) == ("image" in record)
        if "image" in record:
            np.testing.assert_array_equal(example["image"], record["image"])
    assert "tensorflow" not in sys.modules


def test_pipeline_trains_from_a_prepared_tfds_folder(prepared):
    source_dir, _, tfds_dir = prepared
    cfg = DataConfig(path=str(tfds_dir), tokenizer=str(source_dir / "tokenizer.json"),
                     max_text_len=8)
    source, transform = pipeline.open_split(cfg, "train", pipeline.load_tokenizer(cfg))
    assert source.manifest.label_names == ["odd"]
    records = [source[i] for i in range(len(source))]
    assert sorted(r["patient_id"] for r in records) == sorted(f"p{i}" for i in range(12))
    assert sum("image" in r for r in records) == 8  # absent images stay absent
    batch = pipeline.train_batches(source, transform, 4, seed=0)[0]
    assert batch["image"].shape == (4, 8, 8, 1) and batch["text"].shape == (4, 8)


def test_absent_risk_and_labels_stay_absent_not_zero(prepared):
    """Zero-filled for TFDS, they come back absent: a missing risk read as risk 0 would
    train the risk head on made-up negatives."""
    source_dir, _, tfds_dir = prepared
    original = shards.ShardedSource(source_dir, "train")
    by_id = {original[i]["patient_id"]: original[i] for i in range(len(original))}
    cfg = DataConfig(path=str(tfds_dir), tokenizer=str(source_dir / "tokenizer.json"),
                     max_text_len=8)
    source, transform = pipeline.open_split(cfg, "train", pipeline.load_tokenizer(cfg))
    for i in range(len(source)):
        record = source[i]
        expected = by_id[record["patient_id"]]
        assert set(record) == set(expected)
        for name in ("risk", "labels"):
            if name in expected:
                np.testing.assert_array_equal(record[name], expected[name])
        out = transform(record)
        assert bool(out["has_risk"]) == ("risk" in expected)
        assert bool(out["has_labels"]) == ("labels" in expected)
    assert sum("risk" not in r for r in by_id.values()) == 3  # p0, p4, p8
    assert by_id["p3"]["risk"] == 0  # a present zero, told apart from the absent ones
