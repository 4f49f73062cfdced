"""Generated bad input for the readers a dataset or a config passes through: each ends in
the project's own error naming the file, record or key, or in a valid result — never
another exception, a crash or a hang. (The ingesters' fuzz tests are in test_formats.py and
test_audio.py.) `python tools/fuzz.py` runs all of them with thousands of cases each."""

import contextlib
import json
import shutil

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmjax import config as config_lib
from mmjax.config import Config, ConfigError
from mmjax.data import shards
from mmjax.data.shards import DatasetError, ShardedSource

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two shards of three records with an image and a text."""
    directory = tmp_path_factory.mktemp("fuzz_dataset")
    records = [{"image": np.full((4, 4, 1), i, np.uint8), "text": f"report {i}",
                "patient_id": f"p{i}"} for i in range(6)]
    shards.write_dataset(directory, "fuzz", {"train": records}, {"image": (4, 4, 1)}, [],
                         records_per_shard=3)
    return directory


# ---- Records and shards.

@given(data=st.binary(max_size=512))
def test_fuzz_record_bytes(data):
    try:
        assert isinstance(shards.decode_record(data, "shard record 0"), dict)
    except DatasetError as e:
        assert "shard record 0" in str(e)


@given(value=JSON, dtype=st.sampled_from(["uint8", "float32", "object", "V8", "<U4", ""]),
       shape=st.lists(st.integers(-2, 5), max_size=3), data=st.binary(max_size=64))
def test_fuzz_record_structures(value, dtype, shape, data):
    """Well-formed msgpack carrying odd values and array headers that lie."""
    array = {"__ndarray__": True, "dtype": dtype, "shape": shape, "data": data}
    for raw in ({"image": array}, {"text": value}, value, [array]):
        try:
            record = shards.decode_record(msgpack.packb(raw), "here")
        except DatasetError:
            continue
        image = record.get("image")
        if isinstance(image, np.ndarray):  # decoded only if the header told the truth
            assert image.dtype != object and image.nbytes == len(data)


@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                      max_size=8),
       cut=st.none() | st.integers(0, 10_000))
def test_fuzz_corrupt_shard_files(dataset, tmp_path_factory, edits, cut):
    """Bytes flipped or cut in a shard, read without the checksum that would catch it."""
    copy = tmp_path_factory.mktemp("corrupt") / "d"
    shutil.copytree(dataset, copy)
    shard = copy / "train-00000.array_record"
    data = bytearray(shard.read_bytes())
    for position, byte in edits:
        data[position % len(data)] = byte
    corrupted = bytes(data[:cut] if cut is not None else data)
    shard.write_bytes(corrupted)
    try:
        source = ShardedSource(copy, "train", verify=False)
        for i in range(len(source)):
            assert source[i]["image"].shape == (4, 4, 1)
    except DatasetError as e:
        assert "train-00000.array_record" in str(e)
    if corrupted != (dataset / shard.name).read_bytes():  # verified, it never gets that far
        with pytest.raises(DatasetError, match="train-00000.array_record: checksum mismatch"):
            ShardedSource(copy, "train")


# ---- The dataset manifest.

MANIFEST_KEYS = ("schema_version", "name", "fields", "label_names", "splits", "attributes")


@given(key=st.sampled_from(MANIFEST_KEYS), value=JSON | st.just("__delete__"),
       shard_path=st.sampled_from(["train-00000.array_record", "../x", "/etc/passwd",
                                   "a/../../x", "", ".", "sub/../train-00000.array_record"]),
       shard_key=st.sampled_from(["path", "num_records", "sha256", "extra"]),
       shard_value=JSON)
def test_fuzz_manifest(dataset, tmp_path_factory, key, value, shard_path, shard_key,
                       shard_value):
    copy = tmp_path_factory.mktemp("manifest") / "d"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if value == "__delete__":
        manifest.pop(key)
    else:
        manifest[key] = value
    if isinstance(manifest.get("splits"), dict) and manifest["splits"].get("train"):
        shard = manifest["splits"]["train"][0]
        shard["path"], shard[shard_key] = shard_path, shard_value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    try:
        source = ShardedSource(copy, "train")
    except DatasetError as e:
        assert str(copy / "manifest.json") in str(e) or str(copy) in str(e)
        return
    for i in range(len(source)):  # whatever was accepted reads back or fails clearly
        with contextlib.suppress(DatasetError):
            source[i]
    for path in source._paths:
        assert path.is_relative_to(copy.resolve())


def test_shard_paths_that_leave_the_dataset_are_refused(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "d")
    (tmp_path / "outside.array_record").write_bytes(b"")
    (copy / "link.array_record").symlink_to(tmp_path / "outside.array_record")
    manifest = json.loads((copy / "manifest.json").read_text())
    for path in ("../outside.array_record", str(tmp_path / "outside.array_record"),
                 "link.array_record"):
        manifest["splits"]["train"][0]["path"] = path
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DatasetError, match=f"'{path}' leaves the dataset folder"):
            ShardedSource(copy, "train")


# ---- Configs.

KEYS = config_lib.leaf_keys(Config())


@given(key=st.sampled_from(KEYS) | st.text(max_size=20),
       text=st.text(max_size=20) | st.sampled_from(["[]", "()", "(a,b)", "1e400", "nan",
                                                    "-1", "true", "None", "{}"]),
       separator=st.sampled_from(["=", ":", "==", ""]))
def test_fuzz_config_overrides(key, text, separator):
    assignment = f"{key}{separator}{text}"
    try:
        config_lib.override(Config(), assignment)
    except ConfigError as e:
        assert f"'{assignment.split('=', 1)[0].strip()}'" in str(e) or "key=value" in str(e)


@given(section=st.sampled_from(["model", "train", "data", "optim", "nope"]),
       key=st.sampled_from(KEYS) | st.text(max_size=10), value=JSON)
def test_fuzz_config_json(tmp_path_factory, section, key, value):
    """A workdir's config.json, edited by hand."""
    data = config_lib.to_dict(Config())
    data.setdefault(section, {})
    if isinstance(data[section], dict):
        data[section][key.rsplit(".", 1)[-1]] = value
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(data))
    try:
        config_lib.read(path)
    except ConfigError as e:
        assert section in str(e) or str(path) in str(e)
