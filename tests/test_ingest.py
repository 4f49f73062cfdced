"""Ingesting raw files: manifests with images, DICOM studies, ECGs; bad files counted."""

import json
import shutil

import numpy as np
import pytest
from conftest import write_av
from PIL import Image
from pydicom.data import get_testdata_file

from mmjax.config import ConfigError
from mmjax.data import inspect as inspect_lib
from mmjax.data import schema
from mmjax.data.ingest import Shapes, held_out, ingest
from mmjax.data.shards import ShardedSource

SHAPES = Shapes(image_size=32, channels=1, frames=4, signal_rate_hz=100, signal_seconds=2.0)


def _all_records(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return [ShardedSource(out, split)[i] for split in manifest["splits"]
            for i in range(len(ShardedSource(out, split)))]


def test_csv_manifest_with_images_reports_and_labels(tmp_path):
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    lines = ["patient_id,image,report,label_effusion,label_nodule"]
    for i in range(20):
        pixels = np.full((40, 30), 10 * i, np.uint8)
        Image.fromarray(pixels).save(src / "img" / f"{i}.png")
        lines.append(f"p{i},img/{i}.png,Report of patient {i}.,{i % 2},{int(i % 3 == 0)}")
    (src / "img" / "19.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "manifest.csv").write_text("\n".join(lines) + "\n")

    out = tmp_path / "out"
    report = ingest(src / "manifest.csv", out, shapes=SHAPES, eval_fraction=0.25,
                    max_errors=0.1)
    assert report["files"] == 20 and report["records"] == 19
    assert [e["path"] for e in report["errors"]] == [str(src / "img" / "19.png")]
    assert report["label_names"] == ["effusion", "nodule"]
    assert json.loads((out / "ingest_report.json").read_text()) == report
    records = {r["patient_id"]: r for r in _all_records(out)}
    assert set(records) == {f"p{i}" for i in range(19)}
    assert records["p3"]["image"].shape == (32, 32, 1)
    np.testing.assert_array_equal(records["p3"]["labels"], [1, 1])
    assert records["p3"]["report"] == "Report of patient 3."
    assert (out / "tokenizer.json").is_file()
    assert report["splits"]["eval"] == sum(held_out(f"p{i}", 0.25) for i in range(19))


def test_too_many_errors_fail_but_still_write_the_report(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "b.png")
    (src / "m.jsonl").write_text(
        '{"patient_id": "a", "image": "a.png"}\n{"patient_id": "b", "image": "b.png"}\n')
    with pytest.raises(ConfigError, match=r"1 of 2 files failed \(50.0% > --max-errors"):
        ingest(src / "m.jsonl", tmp_path / "out", shapes=SHAPES, max_errors=0.2)
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["errors"][0]["path"].endswith("a.png")


def test_dicom_folder_becomes_one_record_per_study(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_ybr_color.dcm", "waveform_ecg.dcm"):
        shutil.copy(get_testdata_file(name), src / name)
    ct = (src / "CT_small.dcm").read_bytes()
    (src / "truncated.dcm").write_bytes(ct[: int(len(ct) * 0.6)])
    (src / "notes.dcm").write_text("not dicom at all")

    out = tmp_path / "out"
    report = ingest(src, out, shapes=SHAPES, eval_fraction=0.0, max_errors=0.5)
    assert report["files"] == 6
    failed = sorted(e["path"].rsplit("/", 1)[-1] for e in report["errors"])
    assert failed == ["notes.dcm", "truncated.dcm"]
    assert set(report["modalities"]) == {"image", "video", "signal"}
    records = _all_records(out)
    assert len(records) + len(report["skipped"]) == 4  # four good files, grouped by study
    videos = [r["video"] for r in records if "video" in r]
    signals = [r for r in records if "signal" in r]
    assert videos and videos[0].shape == (4, 32, 32, 1)
    assert signals and signals[0]["signal"].shape == (200, len(schema.ECG_LEADS))
    assert signals[0]["signal_leads"].sum() >= 1


def test_ecg_folder_with_npy_and_sidecar(tmp_path):
    src = tmp_path / "ecg"
    src.mkdir()
    t = np.arange(0, 10, 1 / 500)
    leads = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], axis=1).astype(np.float32)
    np.save(src / "rec1.npy", leads)
    (src / "rec1.json").write_text(json.dumps({"rate_hz": 500, "leads": ["II", "V5"],
                                               "units": "mV"}))
    out = tmp_path / "out"
    ingest(src, out, source_format="ecg", shapes=SHAPES, eval_fraction=0.0)
    (record,) = _all_records(out)
    ii, v5 = schema.ECG_LEADS.index("II"), schema.ECG_LEADS.index("V5")
    assert record["signal_leads"].tolist() == [int(i in (ii, v5)) for i in range(12)]
    assert record["signal"].dtype == np.float16 and record["signal"].shape == (200, 12)
    assert np.abs(record["signal"][:, ii]).max() == pytest.approx(1.0, abs=0.05)


def test_videos_keep_their_audio_tracks_and_short_clips_their_length(tmp_path):
    """MP4s written here with PyAV: the audio track becomes the audio modality at the
    dataset's rate (a silent video has none), a clip shorter than the stored frame count
    is zero padded with its length kept, and WAV files are audio records."""
    src, rate = tmp_path / "src", 8000
    src.mkdir()
    tone = 0.5 * np.sin(2 * np.pi * 100 * np.arange(rate) / rate)  # 1 s of 100 Hz
    write_av(src / "echo_with_sound.mp4", [tone], rate=rate, video_frames=10, frame_value=200)
    write_av(src / "short_silent.mp4", video_frames=2, frame_value=200)
    (src / "murmur.wav").write_bytes((write_av(tmp_path / "m.wav", [tone[:rate // 2]],
                                               "pcm_s16le", rate)).read_bytes())
    shapes = Shapes(image_size=16, frames=4, audio_rate_hz=1000, audio_seconds=2.0)
    out = tmp_path / "out"
    ingest(src, out, shapes=shapes, eval_fraction=0.0)
    records = {r["patient_id"]: r for r in _all_records(out)}

    with_sound = records["echo_with_sound"]
    assert with_sound["video"].shape == (4, 16, 16, 1) and with_sound["video_length"] == 4
    assert with_sound["audio"].shape == (2000,) and with_sound["audio"].dtype == np.float16
    assert 950 <= with_sound["audio_length"] <= 1100  # 1 s at 1 kHz (+ codec priming)
    audio = with_sound["audio"][: with_sound["audio_length"]].astype(np.float32)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 1000)[spectrum.argmax()] == pytest.approx(100, abs=3)
    assert not with_sound["audio"][with_sound["audio_length"]:].any()

    short = records["short_silent"]
    assert "audio" not in short and short["video_length"] == 2
    assert short["video"][:2].mean() > 100 and not short["video"][2:].any()
    assert records["murmur"]["audio_length"] == 500 and "video" not in records["murmur"]

    summary = inspect_lib.summarize(out)["splits"]["train"]
    assert summary["present"]["audio"] == pytest.approx(2 / 3)
    assert "audio    present  66.7%" in inspect_lib.format_summary(inspect_lib.summarize(out))
    inspect_lib.plot_examples(out, tmp_path / "grid.png")
    # The grid says which modality is absent and puts time in seconds under the audio.
    source = ShardedSource(out, "train")
    figure = inspect_lib.example_figure(source)
    rate = source.manifest.attributes["audio_rate_hz"]
    for row, axes in enumerate(np.asarray(figure.axes).reshape(-1, 5)):
        record, audio_ax = source[row], axes[3]
        notes = [t.get_text() for t in audio_ax.texts]
        if "audio" in record:
            assert notes == [] and audio_ax.get_xlabel() == "s"
            assert audio_ax.lines[0].get_xdata()[-1] == pytest.approx(
                (record["audio_length"] - 1) / rate)
        else:
            assert notes == ["no audio"]
        assert [t.get_text() for t in axes[2].texts] == ["no signal"]  # no ECGs here


def test_unknown_format_and_missing_source_are_named(tmp_path):
    with pytest.raises(ConfigError, match="--format 'xray'"):
        ingest(tmp_path, tmp_path / "o", source_format="xray")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ingest(tmp_path / "nowhere", tmp_path / "o")
