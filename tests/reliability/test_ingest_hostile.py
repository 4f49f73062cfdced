"""A hostile user's manifests and folders: each probe ends in a record, a counted error
naming the file (or line) and why, or one ConfigError line — never a traceback, a file
read from outside the source, a dropped column or silently lost colour."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import wave

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from mmjax.cli import main
from mmjax.config import ConfigError, DataConfig
from mmjax.data import inspect as inspect_lib
from mmjax.data import pipeline
from mmjax.data.formats import FormatError, tabular
from mmjax.data.ingest import Shapes, ingest
from mmjax.data.shards import ShardedSource

SHAPES = Shapes(image_size=16, channels=1, frames=4, signal_rate_hz=100, signal_seconds=2.0,
                audio_rate_hz=1000, audio_seconds=1.0)


def _png(path, pixels=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 100, np.uint8) if pixels is None else pixels).save(path)
    return path


def _wav(path, rate=8000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((1000 * np.sin(np.arange(rate // 2) / 5)).astype("<i2").tobytes())
    return path


def _manifest(src, lines):
    src.mkdir(parents=True, exist_ok=True)
    (src / "m.csv").write_text("\n".join(lines) + "\n")
    return src / "m.csv"


def _records(out, split="train"):
    source = ShardedSource(out, split)
    return {r["patient_id"]: r for r in (source[i] for i in range(len(source)))}


def _errors(report):
    return {os.path.basename(e["path"]): e["reason"] for e in report["errors"]}


# ---- 1. The manifest column decides the modality; a folder goes by suffix.


def test_each_column_reads_only_its_own_kind_of_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _png(src / "x.png")
    _wav(src / "heart.wav")
    shutil.copy(get_testdata_file("waveform_ecg.dcm"), src / "ecg.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    manifest = _manifest(src, [
        "patient_id,image,video,signal,audio",
        "wav_as_image,heart.wav,,,",
        "waveform_as_image,ecg.dcm,,,",
        "png_as_video,,x.png,,",
        "ct_as_signal,,,ct.dcm,",
        "png_as_audio,,,,x.png",
        "good,ct.dcm,,ecg.dcm,heart.wav",
        "png,x.png,,,",
    ])
    report = ingest(manifest, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0,
                    max_errors=1.0)
    reasons = [(os.path.basename(e["path"]), e["reason"]) for e in report["errors"]]
    assert reasons == [
        ("heart.wav", "column 'image' takes an image (PNG/JPEG/TIFF/BMP or a single-frame "
                      "DICOM image), not 'heart.wav'"),
        ("ecg.dcm", "column 'image' holds a DICOM signal, not an image (PNG/JPEG/TIFF/BMP or "
                    "a single-frame DICOM image)"),
        ("x.png", "column 'video' takes a video (MP4/AVI/MOV/MKV/WebM or a multi-frame "
                  "DICOM), not 'x.png'"),
        ("ct.dcm", "column 'signal' holds a DICOM image, not an ECG (.hea/.npy/.csv or a "
                   "DICOM waveform)"),
        ("x.png", "column 'audio' takes audio (WAV/FLAC/OGG/MP3/M4A), not 'x.png'"),
    ]
    records = _records(tmp_path / "out")
    assert set(records) == {"good", "png"}
    assert {"image", "signal", "audio"} <= set(records["good"]) and "video" not in records["good"]
    assert set(records["png"]) == {"patient_id", "image"}


def test_folder_source_still_chooses_by_suffix(tmp_path):
    src = tmp_path / "src"
    _png(src / "scan.png")
    _wav(src / "heart.wav")
    report = ingest(src, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0)
    assert report["errors"] == []
    records = _records(tmp_path / "out")
    assert "image" in records["scan"] and "audio" in records["heart"]


# ---- 2. Nothing outside the source folder is read, symlinks included.


def test_symlinks_out_of_the_manifest_folder_are_refused(tmp_path):
    outside = tmp_path / "outside"
    _png(outside / "secret.png", np.full((8, 8), 250, np.uint8))
    src = tmp_path / "src"
    _png(src / "ok.png")
    (src / "leak.png").symlink_to(outside / "secret.png")
    (src / "dir").symlink_to(outside)
    (src / "alias.png").symlink_to(src / "ok.png")  # a link that stays inside is fine
    manifest = _manifest(src, ["patient_id,image", "a,leak.png", "b,dir/secret.png",
                               "c,alias.png", "d,ok.png"])
    report = ingest(manifest, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0,
                    max_errors=1.0)
    real_outside = os.path.realpath(outside / "secret.png")
    assert [(e["path"], e["reason"]) for e in report["errors"]] == [
        (str(src / name), f"resolves to {real_outside}, outside {os.path.realpath(src)}")
        for name in ("leak.png", "dir/secret.png")]
    assert set(_records(tmp_path / "out")) == {"c", "d"}


def test_symlinks_out_of_a_source_folder_are_counted_not_followed(tmp_path):
    outside = tmp_path / "outside"
    _png(outside / "secret.png")
    src = tmp_path / "src"
    _png(src / "ok.png")
    (src / "leak.png").symlink_to(outside / "secret.png")
    report = ingest(src, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0, max_errors=1.0)
    assert report["files"] == 2 and list(_errors(report)) == ["leak.png"]
    assert "outside" in _errors(report)["leak.png"]
    assert set(_records(tmp_path / "out")) == {"ok"}


# ---- 3. risk, age and sex are stored; a row without them has them absent.


def test_risk_age_sex_are_stored_and_absent_where_blank(tmp_path):
    src = tmp_path / "src"
    _png(src / "a.png")
    manifest = _manifest(src, ["patient_id,image,risk,age,sex",
                               "p1,a.png,1,64.5,F", "p2,a.png,,,"])
    report = ingest(manifest, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0)
    assert report["targets"] == ["risk", "age", "sex"]
    source = ShardedSource(tmp_path / "out", "train")
    fields = source.manifest.fields
    assert {k: (fields[k]["dtype"], fields[k]["shape"]) for k in ("risk", "age", "sex")} == {
        "risk": ("uint8", []), "age": ("float32", []), "sex": ("uint8", [])}
    records = _records(tmp_path / "out")
    assert (records["p1"]["risk"], records["p1"]["age"], records["p1"]["sex"]) == (1, 64.5, 0)
    assert not {"risk", "age", "sex"} & set(records["p2"])
    transform = pipeline.ExampleTransform(DataConfig(modalities=("image",), augment=False),
                                          fields, None, 0)
    assert transform(records["p1"])["has_risk"] and transform(records["p1"])["risk"] == 1.0
    assert not transform(records["p2"])["has_risk"]
    present = inspect_lib.summarize(tmp_path / "out")["splits"]["train"]["present"]
    assert present == {"image": 1.0, "risk": 0.5, "age": 0.5, "sex": 0.5}


# ---- 4. Flags out of range are refused before anything is read.


@pytest.mark.parametrize("flags, named", [
    ({"eval_fraction": 1.0}, "--eval-fraction must be in [0, 1), got 1.0"),
    ({"eval_fraction": -0.1}, "--eval-fraction"),
    ({"eval_fraction": float("nan")}, "--eval-fraction"),
    ({"max_errors": 1.5}, "--max-errors must be in [0, 1], got 1.5"),
    ({"max_errors": -0.01}, "--max-errors"),
])
def test_flags_out_of_range_are_refused_before_reading(tmp_path, flags, named):
    with pytest.raises(ConfigError) as e:  # a missing source would be FileNotFoundError
        ingest(tmp_path / "nowhere", tmp_path / "out", **flags)
    assert named in str(e.value) and not (tmp_path / "out").exists()


def test_flag_out_of_range_is_one_line_from_the_cli(tmp_path, capsys):
    src = tmp_path / "src"
    _png(src / "a.png")
    code = main(["data", "ingest", "--src", str(src), "--out", str(tmp_path / "o"),
                 "--eval-fraction", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "mmjax: error: --eval-fraction must be in [0, 1), got 1.0"]


# ---- 5. Unknown columns are warned about, with the name they likely meant.


def test_unknown_columns_are_reported_with_suggestions(tmp_path, caplog):
    src = tmp_path / "src"
    _png(src / "a.png")
    manifest = _manifest(src, ["patient_id,path,report,effusion,comment",
                               "p1,a.png,Normal.,1,x", "p2,a.png,Effusion.,0,"])
    with caplog.at_level(logging.WARNING, "mmjax.data.ingest"):
        report = ingest(manifest, tmp_path / "out", shapes=SHAPES, eval_fraction=0.0)
    assert report["ignored_columns"] == {"path": "image", "effusion": "label_effusion",
                                         "comment": None}
    assert report["modalities"] == ["report"]
    (warning,) = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert warning == ("ignored manifest columns 'path' (rename it 'image'?), 'effusion' "
                       "(rename it 'label_effusion'?), 'comment'; the dataset has no image, "
                       "video, signal or audio")


def test_unknown_jsonl_keys_and_a_misnamed_patient_column(tmp_path):
    src = tmp_path / "src"
    _png(src / "a.png")
    (src / "m.jsonl").write_text('{"patient_id": "p", "image": "a.png", "Sex": "F"}\n')
    report = ingest(src / "m.jsonl", tmp_path / "out", shapes=SHAPES, eval_fraction=0.0)
    assert report["ignored_columns"] == {"Sex": "sex"}
    manifest = _manifest(tmp_path / "src2", ["PatientID,image", "p,a.png"])
    with pytest.raises(ConfigError, match=r"missing column 'patient_id' \(rename "
                                          r"'PatientID' -> 'patient_id'\)"):
        ingest(manifest, tmp_path / "out2")


# ---- 6. Colour made grey is counted and warned about.


def test_colour_images_stored_grey_are_counted(tmp_path, caplog):
    src = tmp_path / "src"
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    _png(src / "red.png", red)
    _png(src / "grey_rgb.png", np.full((8, 8, 3), 90, np.uint8))  # colour file, grey content
    _png(src / "grey.png")
    manifest = _manifest(src, ["patient_id,image", "a,red.png", "b,grey_rgb.png", "c,grey.png"])
    with caplog.at_level(logging.WARNING, "mmjax.data.ingest"):
        report = ingest(manifest, tmp_path / "grey", shapes=SHAPES, eval_fraction=0.0)
    assert report["converted_to_grey"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if "colour" in r.getMessage()]
    assert warning == ("1 colour images were stored grey (--channels 1); pass --channels 3 "
                       "to keep colour")
    colour = Shapes(image_size=16, channels=3)
    report = ingest(manifest, tmp_path / "colour", shapes=colour, eval_fraction=0.0)
    assert report["converted_to_grey"] == 0
    assert _records(tmp_path / "colour")["a"]["image"].shape == (16, 16, 3)


# ---- 7. Row problems are counted skips; file problems one ConfigError; never a traceback.


def _cli(tmp_path, capsys, src, *flags):
    code = main(["data", "ingest", "--src", str(src), "--out", str(tmp_path / "out"),
                 "--image-size", "16", "--eval-fraction", "0", *flags])
    return code, capsys.readouterr().err


def test_bad_rows_are_skipped_naming_their_lines(tmp_path, capsys):
    src = tmp_path / "src"
    _png(src / "a.png")
    manifest = _manifest(src, [
        "patient_id,image,label_x",
        "p1,a.png,1",
        ",a.png,0",  # line 3: no patient
        "p3,a.png,yes",  # line 4: not a label value
        "p4,a.png",  # line 5: ragged
        "p5,a.png,0",
    ])
    code, err = _cli(tmp_path, capsys, manifest, "--max-errors", "0.6")
    assert code == 0 and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert [e["reason"] for e in report["errors"]] == [
        "line 3: missing patient_id", "line 4: label_x must be a number, got 'yes'",
        "line 5: 2 fields, 3 columns"]
    assert all(e["path"] == str(manifest) for e in report["errors"])
    assert report["rows_refused"] == 3 and report["error_fraction"] == pytest.approx(3 / 5)
    assert set(_records(tmp_path / "out")) == {"p1", "p5"}

    code, err = _cli(tmp_path, capsys, manifest)  # --max-errors 0.05
    assert code == 2 and err.strip().splitlines() == [
        f"mmjax: error: 3 of 5 files and manifest rows failed (60.0% > --max-errors 5.0%); "
        f"see {tmp_path / 'out' / 'ingest_report.json'}"]


def test_bad_jsonl_lines_are_skipped_naming_their_lines(tmp_path, capsys):
    src = tmp_path / "src"
    _png(src / "a.png")
    (src / "m.jsonl").write_text(
        '{"patient_id": "p1", "image": "a.png"}\n'
        '{"patient_id": "p2", "image": ["a.png"]}\n'
        '{"patient_id": "p3", "image": \n'
        '["not", "an", "object"]\n'
        '{"patient_id": "p5", "image": "a.png"}\n')
    code, err = _cli(tmp_path, capsys, src / "m.jsonl", "--max-errors", "1")
    assert code == 0 and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert [e["reason"][:7] for e in report["errors"]] == ["line 2:", "line 3:", "line 4:"]
    assert "image must be text" in report["errors"][0]["reason"]
    assert set(_records(tmp_path / "out")) == {"p1", "p5"}


@pytest.mark.parametrize("name, content, reason", [
    ("m.csv", b"image,report\na.png,x\n", "missing column 'patient_id'"),
    ("m.csv", b"patient_id,image\np1,\xff\xfe\xfa.png\n", "unreadable manifest"),
    ("m.jsonl", b'\x00\x9f\x92\x96{"patient_id": 1}\n', "unreadable manifest"),
    ("m.csv", b"patient_id,age\np1,3\n", "none of the columns"),
    ("notes.txt", b"patient_id,image\n", "is neither a folder nor a manifest"),
])
def test_a_bad_manifest_file_is_one_error_line(tmp_path, capsys, name, content, reason):
    (tmp_path / name).write_bytes(content)
    code, err = _cli(tmp_path, capsys, tmp_path / name)
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith("mmjax: error: ") and reason in line
    assert str(tmp_path / name) in line


def test_manifest_format_on_a_folder_is_one_error_line(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, tmp_path, "--format", "manifest")
    assert code == 2 and err.strip().splitlines() == [
        f"mmjax: error: manifest {tmp_path}: not a regular file"]


def test_a_source_that_yields_no_records_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _cli(tmp_path, capsys, tmp_path / "empty")
    assert code == 2 and err.strip().splitlines() == [
        f"mmjax: error: no records in {tmp_path / 'empty'}; see "
        f"{tmp_path / 'out' / 'ingest_report.json'}"]


# ---- 8. Pixel budget before decoding; big images shrunk in PIL, small ones untouched.


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(tmp_path):
    path = _png(tmp_path / "src" / "huge.png", np.zeros((9000, 9000), np.uint8))
    assert path.stat().st_size < 1_000_000  # compresses to a small file
    with pytest.raises(FormatError, match=r"huge.png: image is 9000x9000 pixels, over the "
                                          r"limit of 50 megapixels"):
        tabular.read_image(path, 64)
    manifest = _manifest(tmp_path / "src", ["patient_id,image", "p,huge.png"])
    with pytest.raises(ConfigError, match="1 of 1 files failed"):
        ingest(manifest, tmp_path / "out", shapes=SHAPES)
    assert "9000x9000" in _errors(json.loads((tmp_path / "out" / "ingest_report.json")
                                             .read_text()))["huge.png"]


MEASURE = textwrap.dedent("""
    import resource, sys
    from mmjax.data.formats import tabular
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = tabular.read_image(sys.argv[1], 64)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(image.shape, growth // 1024)
""")


def test_a_large_accepted_image_is_shrunk_before_any_float_copy(tmp_path):
    """7000x7000 grey (49 MB decoded): a float32 copy alone would be 196 MB; reading it
    at full size and converting took 562 MiB more, shrinking in PIL takes about 47."""
    path = _png(tmp_path / "big.png", np.zeros((7000, 7000), np.uint8))
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                            text=True, check=True)
    shape, growth_mib = result.stdout.rsplit(" ", 1)
    assert shape == "(65, 65)" and int(growth_mib) < 120


def test_shrinking_keeps_values_and_leaves_small_images_alone(tmp_path):
    small = _png(tmp_path / "small.png", np.arange(80 * 100, dtype=np.uint8).reshape(80, 100))
    np.testing.assert_array_equal(tabular.read_image(small, 64), tabular.read_image(small))
    ramp = np.tile(np.linspace(0, 65535, 1024).astype(np.uint16), (512, 1))
    grey16 = _png(tmp_path / "ramp16.png", ramp)
    shrunk, full = tabular.read_image(grey16, 64), tabular.read_image(grey16)
    assert shrunk.shape == (32, 64) and shrunk.dtype == np.float32
    np.testing.assert_allclose(shrunk[0], full[0].reshape(64, 16).mean(axis=1), atol=1e-4)
    gradient = np.broadcast_to(np.linspace(0, 255, 2048).astype(np.uint8), (2048, 2048))
    Image.fromarray(np.stack([gradient] * 3, -1)).save(tmp_path / "photo.jpg", quality=95)
    shrunk = tabular.read_image(tmp_path / "photo.jpg", 64)  # JPEG draft, then reduce
    assert shrunk.shape == (64, 64, 3)
    np.testing.assert_allclose(shrunk[32, :, 0], gradient[0].reshape(64, 32).mean(1) / 255,
                               atol=0.02)
