"""An export folder that was changed after it was written is refused by `load`, naming the
file: a flipped byte, a truncated or missing file (their SHA-256 no longer matches), and an
export.json naming a path outside the folder (absolute, with '..', or a symlink out), even
when that file's digest is right. The writer names only plain files inside the folder."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import initialised_workdir, tiny_config

from mmjax import export as export_lib


@pytest.fixture(scope="module")
def exported(tmp_path_factory, all_modalities_dataset) -> Path:
    """The image and report encoders of a smoke model as initialised, exported."""
    cfg = tiny_config(all_modalities_dataset)
    cfg.train.batch_size = 16
    workdir = tmp_path_factory.mktemp("workdir")
    initialised_workdir(cfg, workdir)
    return export_lib.export(workdir, tmp_path_factory.mktemp("exports") / "model")


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    return shutil.copytree(exported, tmp_path / "export")


def _edit_info(folder: Path, edit) -> None:
    path = folder / "export.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def test_the_writer_names_only_files_inside_the_folder(exported):
    info = json.loads((exported / "export.json").read_text())
    named = [*info["files"], *(e[part] for e in info["modalities"].values()
                               for part in ("function", "params"))]
    assert named and all(name == Path(name).name for name in named)
    assert {p.name for p in exported.iterdir()} == {*info["files"], "export.json"}
    export_lib.load(exported)  # untouched, it loads


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file(copy):
    weights = copy / "image.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last weight's lowest bits: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{weights} is not the file exported "
                                         r"\(sha256 differs\)"):
        export_lib.load(copy)


def test_a_truncated_or_missing_file_is_refused_naming_it(copy):
    function = copy / "report.stablehlo"
    function.write_bytes(function.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{function} is not the file exported"):
        export_lib.load(copy)
    function.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{function} is missing"):
        export_lib.load(copy)


def test_an_absolute_path_is_refused_even_with_the_right_digest(copy, exported):
    """Without the check this export would load, reading a file outside its folder."""
    outside = str(exported / "image.safetensors")

    def point_outside(info):
        info["files"][outside] = info["files"]["image.safetensors"]
        info["modalities"]["image"]["params"] = outside

    _edit_info(copy, point_outside)
    with pytest.raises(ValueError, match=rf"modalities.image.params names '{outside}', not a "
                                         "relative path inside the export folder"):
        export_lib.load(copy)


@pytest.mark.parametrize("name", ["../model/image.stablehlo", "sub/../../x", ""])
def test_a_path_climbing_out_is_refused_naming_the_key(copy, name):
    _edit_info(copy, lambda info: info["modalities"]["image"].update(function=name))
    with pytest.raises(ValueError, match=r"export.json: modalities.image.function names "
                                         rf"'{name}', not a relative path"):
        export_lib.load(copy)


def test_a_listed_file_climbing_out_is_refused_naming_it(copy):
    _edit_info(copy, lambda info: info["files"].update({"../secret": "0" * 64}))
    with pytest.raises(ValueError, match=r"files\['../secret'\] names '../secret'"):
        export_lib.load(copy)


def test_a_symlink_out_of_the_folder_is_refused_even_with_the_right_digest(copy, tmp_path):
    """The tokenizer replaced by a link to an identical file elsewhere: its digest matches,
    so only resolving the path catches it."""
    elsewhere = shutil.copy(copy / "tokenizer.json", tmp_path / "elsewhere.json")
    (copy / "tokenizer.json").unlink()
    os.symlink(elsewhere, copy / "tokenizer.json")
    with pytest.raises(ValueError, match=rf"names 'tokenizer.json', which resolves to "
                                         rf"{elsewhere}, outside the export folder"):
        export_lib.load(copy)


def test_a_file_not_listed_with_its_digest_is_refused(copy):
    _edit_info(copy, lambda info: info["files"].pop("image.stablehlo"))
    with pytest.raises(ValueError, match=r"modalities.image.function names 'image.stablehlo', "
                                         r"which 'files' does not list with its SHA-256"):
        export_lib.load(copy)


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", r"export.json is not JSON"),
    ("[1, 2]", r"export.json is not a JSON object"),
    ('{"format": "mmjax-export", "version": "1"}', r"is not a mmjax-export of version <= 1"),
])
def test_a_damaged_export_json_is_named(copy, text, match):
    (copy / "export.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        export_lib.load(copy)
