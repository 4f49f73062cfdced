"""A damaged or hostile dataset folder — a manifest declaring absurd, negative or
mistyped fields, a record holding a string where an array belongs, a tokenizer.json that
is not one — is one DatasetError or ConfigError naming the file and the field, raised
before anything is allocated; `mmjax train` on it exits 2 with that one line."""

import json
import re
import textwrap

import numpy as np
import pytest

from mmjax import cli
from mmjax import config as config_lib
from mmjax.config import ConfigError
from mmjax.data import pipeline, shards
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.shards import DatasetError, ShardedSource

SHAPES = {"patient_id": (), "image": (4, 4, 1), "report": (), "labels": (2,)}
REPORTS = ["no acute findings.", "small left pleural effusion."]


def _example(i: int) -> dict:
    return {"patient_id": f"p{i}", "report": REPORTS[i % 2],
            "image": np.full((4, 4, 1), i, np.uint16), "labels": np.array([i % 2, 1], np.uint8)}


@pytest.fixture
def dataset(tmp_path):
    """A valid image-report dataset with its tokenizer."""
    path = tmp_path / "dataset"
    shards.write_dataset(path, "toy", {"train": [_example(i) for i in range(8)],
                                       "eval": [_example(i) for i in range(4)]},
                         SHAPES, ["a", "b"], records_per_shard=4,
                         before_manifest=lambda d: tokenizer_lib.save_for_dataset(
                             d, REPORTS, 200))
    return path


def _edit_manifest(dataset, edit) -> None:
    path = dataset / shards.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest["fields"])
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda f: f["image"].update(shape=[1_000_000_000_000]),
     r"field 'image' with .* does not match the schema"),  # one dimension, not three
    (lambda f: f["image"].update(shape=[1_000_000, 1_000_000, 1]),
     r"field 'image' of shape \[1000000, 1000000, 1\] takes 2,000,000,000,000 bytes per "
     r"example .* over the 1,073,741,824"),
    (lambda f: f["labels"].update(shape=[2**40]), r"field 'labels' of shape \[1099511627776\]"),
    (lambda f: f["image"].update(shape=[4, -4, 1]),
     r"malformed manifest: field 'image' must be \{dtype, shape\} with sizes >= 0"),
    (lambda f: f["image"].update(shape=[4, "4", 1]), r"field 'image' must be \{dtype, shape\}"),
    (lambda f: f["image"].update(dtype="complex128"),
     r"field 'image' with .*complex128.* does not match the schema"),
    (lambda f: f["image"].update(dtype="object"), r"field 'image' with .*object"),
    (lambda f: f.update(weights={"dtype": "float32", "shape": [3]}),
     r"field 'weights' with .* does not match the schema"),
])
def test_a_manifest_with_a_bad_field_is_refused_naming_it(dataset, edit, match):
    _edit_manifest(dataset, edit)
    for read in (lambda: shards.read_manifest(dataset), lambda: ShardedSource(dataset, "train")):
        with pytest.raises(DatasetError, match=match) as caught:
            read()
        assert str(dataset / shards.MANIFEST) in str(caught.value)


def test_an_absurd_field_is_refused_before_the_pipeline_allocates_it(dataset):
    """An image field absent from every record is zero-filled at the manifest's shape:
    unchecked, that shape would be allocated (2 TB here)."""
    _edit_manifest(dataset, lambda f: f["image"].update(shape=[1_000_000, 1_000_000, 1]))
    cfg = config_lib.apply(config_lib.Config(), [f"data.path={dataset}"])
    with pytest.raises(DatasetError, match="field 'image' of shape"):
        pipeline.open_split(cfg.data, "train", pipeline.load_tokenizer(cfg.data))


def test_a_record_holding_a_string_where_an_array_belongs_is_named(tmp_path):
    path = tmp_path / "strings"
    shards.write_dataset(path, "bad", {"train": [
        {"image": "not pixels", "labels": np.array([0, 1], np.uint8)},
        {"image": np.zeros((4, 4, 1), np.uint16), "labels": 1},
        {"image": np.zeros((4, 4, 1), np.uint16), "report": np.zeros(3, np.uint8)},
    ]}, SHAPES, ["a", "b"])
    source = ShardedSource(path, "train")
    for index, match in [(0, r"record 0: field 'image' is a str, manifest says uint16\[4, 4, 1\]"),
                         (1, r"record 1: field 'labels' is a int, manifest says uint8\[2\]"),
                         (2, r"record 2: field 'report' is uint8\[3\], manifest says str\[\]")]:
        with pytest.raises(DatasetError, match=match):
            source[index]


def _corrupt(dataset, kind: str) -> None:
    """Damages the dataset's tokenizer.json as `kind` says."""
    path = dataset / tokenizer_lib.DATASET_FILE
    text = path.read_bytes()
    path.write_bytes({
        "garbage bytes": b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage",
        "JSON that is not a tokenizer": b'{"vocab": ["[PAD]", "[UNK]"]}',
        "truncated": text[: len(text) // 2],
    }[kind])


@pytest.mark.parametrize("kind", ["garbage bytes", "JSON that is not a tokenizer", "truncated"])
def test_a_corrupt_tokenizer_json_is_one_error_naming_it(dataset, kind):
    _corrupt(dataset, kind)
    path = dataset / tokenizer_lib.DATASET_FILE
    with pytest.raises(ConfigError, match=f"^{path}: ") as caught:
        tokenizer_lib.load(path)
    assert caught.value.__cause__ is None  # not the tokenizers library's error, chained


@pytest.mark.parametrize(("what", "match"), [
    ("tokenizer", r"tokenizer.json: not a tokenizer.json the tokenizers library can read"),
    ("manifest", r"manifest.json: field 'image' of shape \[1000000, 1000000, 1\]"),
])
def test_train_on_a_damaged_dataset_exits_2_with_one_line(dataset, tmp_path, capsys, what,
                                                           match):
    if what == "tokenizer":
        _corrupt(dataset, "JSON that is not a tokenizer")
    else:
        _edit_manifest(dataset, lambda f: f["image"].update(shape=[1_000_000, 1_000_000, 1]))
    experiment = tmp_path / "experiment.py"
    experiment.write_text(textwrap.dedent("""
        from mmjax.config import Config

        def get_config():
            cfg = Config()
            cfg.train.batch_size = 4
            return cfg
    """))
    status = cli.main(["train", "--no-progress", "--config", str(experiment), "--workdir",
                       str(tmp_path / "run"), "--set", f"data.path={dataset}"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mmjax: error: ") and re.search(match, err), err
