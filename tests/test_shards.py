import json

import numpy as np
import pytest

from mmjax.data import shards
from mmjax.data.shards import DatasetError, ShardedSource

SHAPES = {"patient_id": (), "image": (4, 4, 1), "report": (), "labels": (2,)}


def _example(i, with_image=True):
    example = {"patient_id": f"p{i}", "report": f"report {i}",
               "labels": np.array([i % 2, 1], np.uint8)}
    if with_image:
        example["image"] = np.full((4, 4, 1), i, np.uint16)
    return example


@pytest.fixture
def dataset(tmp_path):
    shards.write_dataset(
        tmp_path, "toy",
        {"train": [_example(i, with_image=i % 3 != 0) for i in range(25)],
         "eval": [_example(100 + i) for i in range(4)]},
        SHAPES, ["a", "b"], {"seed": 0}, records_per_shard=10,
    )
    return tmp_path


def test_round_trip_across_shards_with_missing_fields(dataset):
    source = ShardedSource(dataset, "train")
    assert len(source) == 25
    manifest = source.manifest
    assert [s.num_records for s in manifest.split("train")] == [10, 10, 5]
    for i in (0, 9, 10, 24):
        record = source[i]
        assert record["patient_id"] == f"p{i}" and record["report"] == f"report {i}"
        np.testing.assert_array_equal(record["labels"], [i % 2, 1])
        assert ("image" in record) == (i % 3 != 0)
    assert source[13]["image"].dtype == np.uint16 and (source[13]["image"] == 13).all()
    assert len(ShardedSource(dataset, "eval")) == 4
    with pytest.raises(IndexError):
        source[25]


def test_unknown_split_is_named(dataset):
    with pytest.raises(DatasetError, match="split 'test' is not in the dataset"):
        ShardedSource(dataset, "test")


def test_checksum_mismatch_names_the_shard(dataset):
    shard = dataset / "train-00001.array_record"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train-00001.array_record: checksum mismatch"):
        ShardedSource(dataset, "train")


def test_truncated_shard_is_a_clear_error_even_unverified(dataset):
    shard = dataset / "train-00002.array_record"
    shard.write_bytes(shard.read_bytes()[:100])
    source = ShardedSource(dataset, "train", verify=False)
    with pytest.raises(DatasetError, match="train-00002.array_record"):
        source[21]


def test_unknown_schema_version_is_refused(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="schema version 99 is not supported"):
        ShardedSource(dataset, "train")


def test_shard_paths_may_not_leave_the_dataset(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["splits"]["train"][0]["path"] = "../elsewhere.array_record"
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        ShardedSource(dataset, "train")


def test_corrupt_record_and_disallowed_dtype_are_errors():
    with pytest.raises(DatasetError, match="shard-x record 3: corrupt record"):
        shards.decode_record(b"\xc1\x00garbage", "shard-x record 3")
    bad = shards.encode_record({"x": np.zeros(2, np.float32)}).replace(b"float32", b"object\0\0")
    with pytest.raises(DatasetError, match="corrupt record"):
        shards.decode_record(bad, "here")


def test_record_that_disagrees_with_the_manifest_is_named(dataset, tmp_path):
    other = tmp_path / "other"
    shards.write_dataset(other, "bad", {"train": [{"image": np.zeros((2, 2, 1), np.uint16)}]},
                         {"image": (4, 4, 1)}, [])
    with pytest.raises(DatasetError, match=r"field 'image' is uint16\[2, 2, 1\]"):
        ShardedSource(other, "train")[0]


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found"):
        ShardedSource(tmp_path, "train")
