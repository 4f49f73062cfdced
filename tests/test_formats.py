"""Raw-file readers: exact values on pydicom's test files and on files written here, one
error type (FormatError) for every kind of bad input, and the fixed-shape conversions."""

import contextlib
import json
import pickle
import re
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
import wfdb
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from mmjax.data import schema
from mmjax.data.formats import FormatError, convert
from mmjax.data.formats.dicom import read_dicom
from mmjax.data.formats.ecg import read_ecg
from mmjax.data.formats.tabular import ManifestRow, read_image, read_manifest
from mmjax.data.formats.video import read_video

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
NPY_MAGIC = b"\x93NUMPY\x01\x00"
DICOM_PREAMBLE = b"\0" * 128 + b"DICM"


def _dicom(name: str) -> str:
    return get_testdata_file(name)


def _truncated_copy(source, target, fraction: float):
    data = Path(source).read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


# --- FormatError ------------------------------------------------------------------------------


def test_format_error_names_file_and_survives_pickling():
    error = FormatError("/data/x.dcm", "truncated")
    assert str(error) == "/data/x.dcm: truncated" and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# --- DICOM ------------------------------------------------------------------------------------


def test_ct_pixels_are_hounsfield_units_exactly():
    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    item = read_dicom(_dicom("CT_small.dcm"))
    assert item.kind == "image" and item.pixels.dtype == np.float32
    np.testing.assert_array_equal(
        item.pixels, ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept
    )
    low, high = np.percentile(item.pixels, [0.5, 99.5])  # CT_small has no window: percentiles
    display = item.display01()
    assert display.min() == 0.0 and display.max() == 1.0
    assert display[item.pixels <= low].max() == 0.0 and display[item.pixels >= high].min() == 1.0


def test_rescale_found_in_enhanced_functional_groups(tmp_path):
    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    expected = ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = ds.RescaleSlope, ds.RescaleIntercept
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(read_dicom(tmp_path / "enhanced.dcm").pixels, expected)


def test_mr_window_from_file_and_monochrome1_inverted(tmp_path):
    item = read_dicom(_dicom("MR_small.dcm"))
    assert (item.window_center, item.window_width) == (600.0, 1600.0)
    np.testing.assert_allclose(item.display01(), convert.window(item.pixels, 600.0, 1600.0))
    ds = pydicom.dcmread(_dicom("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    inverted = read_dicom(tmp_path / "mono1.dcm")
    assert inverted.photometric == "MONOCHROME1"
    np.testing.assert_allclose(inverted.display01(), 1.0 - item.display01())


def _mr_with(tmp_path, name: str, **elements) -> tuple[Path, np.ndarray]:
    """MR_small (window 600/1600, no rescale) with VOI elements set; its modality values."""
    ds = pydicom.dcmread(_dicom("MR_small.dcm"))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / name)
    return tmp_path / name, ds.pixel_array.astype(np.float64)


def test_sigmoid_and_linear_exact_windows_follow_the_standard(tmp_path):
    """PS3.3 C.11.2.1.3: VOILUTFunction SIGMOID is 1 / (1 + exp(-4 (x - c) / w)); LINEAR_EXACT
    is (x - c) / w + 0.5 clipped, without LINEAR's half-unit offsets."""
    path, x = _mr_with(tmp_path, "sigmoid.dcm", VOILUTFunction="SIGMOID")
    np.testing.assert_allclose(read_dicom(path).display01(),
                               1 / (1 + np.exp(-4 * (x - 600) / 1600)), atol=1e-6)
    path, x = _mr_with(tmp_path, "exact.dcm", VOILUTFunction="LINEAR_EXACT", WindowWidth=7)
    np.testing.assert_allclose(read_dicom(path).display01(),
                               np.clip((x - 600) / 7 + 0.5, 0, 1), atol=1e-6)
    assert read_dicom(path).display01().std() > 0.2  # a steep window: mostly 0 or 1


def test_a_voi_lut_sequence_maps_values_through_its_table(tmp_path):
    """A non-linear 16-bit VOI LUT from first_mapped 200: below it the first entry, above
    the table the last; MONOCHROME1 inverted after the LUT."""
    first, entries = 200, 1024
    table = np.round(65535 * (np.arange(entries) / (entries - 1)) ** 2).astype(np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [entries, first, 16]
    lut.LUTData = table.astype("<u2").tobytes()  # OW, as scanners write it
    path, x = _mr_with(tmp_path, "lut.dcm", VOILUTSequence=[lut])
    expected = table[np.clip(x - first, 0, entries - 1).astype(int)] / 65535
    item = read_dicom(path)
    assert item.voi is not None and (x < first).mean() > 0 and (x > first + entries).mean() > 0
    np.testing.assert_allclose(item.display01(), expected, atol=1e-6)
    path, _ = _mr_with(tmp_path, "lut1.dcm", VOILUTSequence=[lut],
                       PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(read_dicom(path).display01(), 1 - expected, atol=1e-6)


def test_an_unknown_voi_function_is_refused_naming_the_file(tmp_path):
    path, _ = _mr_with(tmp_path, "gamma.dcm", VOILUTFunction="GAMMA")
    with pytest.raises(FormatError, match=r"gamma.dcm: VOI LUT that cannot be applied .*GAMMA"):
        read_dicom(path)


def test_ybr_multiframe_ultrasound_is_rgb_video():
    path = _dicom("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    item = read_dicom(path)
    assert item.kind == "video" and item.frames.dtype == np.uint8
    assert item.frames.shape == (ds.NumberOfFrames, ds.Rows, ds.Columns, 3)
    raw = pixel_array(ds, raw=True)  # still YBR_FULL; convert_color_space works in place
    rgb = convert_color_space(raw.copy(), "YBR_FULL", "RGB", per_frame=True)
    assert np.abs(item.frames.astype(int) - rgb).max() <= 1
    assert np.abs(item.frames.astype(int) - raw).max() > 50  # not the raw chroma planes
    assert item.fps == pytest.approx(1000 / float(ds.FrameTime))


def test_palette_colour_expanded_and_grey_multiframe_keeps_one_channel():
    path = _dicom("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    item = read_dicom(path)
    assert item.kind == "image" and item.photometric == "RGB"
    np.testing.assert_array_equal(item.pixels, apply_color_lut(ds.pixel_array, ds))
    np.testing.assert_allclose(item.display01(), item.pixels / 65535, atol=1e-6)
    dose = read_dicom(_dicom("rtdose.dcm"))
    assert dose.kind == "video" and dose.frames.shape == (15, 10, 10, 1) and dose.fps is None


def test_waveform_ecg_in_millivolts_with_schema_lead_names():
    path = _dicom("waveform_ecg.dcm")
    ds = pydicom.dcmread(path)
    rhythm = ds.WaveformSequence[0]  # 10 s rhythm strip; group 1 is a 1.2 s median beat
    item = read_dicom(path)
    assert item.kind == "signal" and item.signal.dtype == np.float32
    assert item.signal.shape == (rhythm.NumberOfWaveformSamples, rhythm.NumberOfWaveformChannels)
    assert item.rate_hz == float(rhythm.SamplingFrequency)
    assert item.lead_names == schema.ECG_LEADS
    channels = rhythm.ChannelDefinitionSequence
    assert {c.ChannelSensitivityUnitsSequence[0].CodeValue for c in channels} == {"uV"}
    np.testing.assert_allclose(item.signal, ds.waveform_array(0) / 1000, rtol=1e-6)
    signal = read_ecg(path)
    assert signal.lead_names == item.lead_names
    np.testing.assert_array_equal(signal.signal, item.signal)


def test_shipped_structured_report_text():
    text = read_dicom(_dicom("test-SR.dcm")).text
    for value in ("A mass of", "was detected.", "Diameter: 3 cm", "Inferred Sample Text"):
        assert value in text
    assert "\r" not in text and "1.2.3.4.5" not in text  # UID references are not report text


def _code(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
    return code


def _content(relationship: str, value_type: str, name: str, **values) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    item.ConceptNameCodeSequence = [_code(name[:16], name)]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def test_built_basic_text_sr_has_findings_not_observer(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.Modality, ds.ValueType = BASIC_TEXT_SR, "SR", "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "Diagnostic imaging report")]
    findings = _content("CONTAINS", "CONTAINER", "Findings", ContinuityOfContent="SEPARATE")
    findings.ContentSequence = [
        _content("CONTAINS", "TEXT", "Finding", TextValue="Small left pleural effusion."),
        _content("CONTAINS", "CODE", "Laterality", ConceptCodeSequence=[_code("7771000", "Left")]),
    ]
    ds.ContentSequence = [
        _content("HAS OBS CONTEXT", "PNAME", "Recording Observer", PersonName="Doe^Jane"),
        findings,
        _content("CONTAINS", "TEXT", "Impression", TextValue="No pneumothorax.\r\nStable."),
    ]
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    item = read_dicom(tmp_path / "report.dcm")
    assert item.kind == "report"
    assert item.text == (
        "Findings\nSmall left pleural effusion.\nLaterality: Left\nNo pneumothorax.\nStable."
    )


def test_truncated_ct_is_a_format_error_naming_the_file(tmp_path):
    path = _truncated_copy(_dicom("CT_small.dcm"), tmp_path / "cut.dcm", 0.6)
    with pytest.raises(FormatError, match="pixel data") as caught:
        read_dicom(path)
    assert str(path) in str(caught.value) and caught.value.path == str(path)
    early = _truncated_copy(_dicom("CT_small.dcm"), tmp_path / "early.dcm", 0.1)
    with pytest.raises(FormatError, match="no pixel data"):  # pydicom drops the cut element
        read_dicom(early)


@pytest.mark.parametrize(
    "name, reason",
    [("notes.dcm", "not a DICOM file"), ("missing.dcm", "no such file"), ("dir", "not a regular")],
)
def test_non_dicom_inputs(tmp_path, name, reason):
    (tmp_path / "notes.dcm").write_text("Patient is well. Not a DICOM file at all.\n" * 20)
    (tmp_path / "dir").mkdir()
    with pytest.raises(FormatError, match=reason):
        read_dicom(tmp_path / name)


def test_objects_without_content_and_missing_decoders(tmp_path):
    with pytest.raises(FormatError, match="no pixel data, waveform or SR"):
        read_dicom(_dicom("rtplan.dcm"))
    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(tmp_path / "private.dcm")
    with pytest.raises(FormatError, match="unsupported transfer syntax 1.2.3.4.5.6"):
        read_dicom(tmp_path / "private.dcm")
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(FormatError, match="no decoder installed for JPEG-LS"):
        read_dicom(_dicom("MR_small_jpeg_ls_lossless.dcm"))


# --- conversions ------------------------------------------------------------------------------


def test_to_stored_image_shape_range_and_channels():
    image = np.linspace(0, 1, 30 * 30, dtype=np.float32).reshape(30, 30)
    stored = convert.to_stored_image(image, 16, 1)
    assert stored.dtype == np.uint16 and stored.shape == (16, 16, 1)
    assert stored.min() < 2000 and stored.max() > 63000
    red = np.zeros((8, 8, 3), np.float32)
    red[..., 0] = 1.0
    np.testing.assert_allclose(convert.to_stored_image(red, 8, 1), round(0.299 * 65535), atol=1)
    rgb = convert.to_stored_image(image, 16, 3)
    assert rgb.shape == (16, 16, 3) and (rgb == stored).all()


def test_padding_keeps_aspect_ratio():
    bar = np.ones((20, 80), np.float32)  # 4:1 bright bar
    stored = convert.to_stored_image(bar, 40, 1)[..., 0].astype(np.float64) / 65535
    rows = stored.mean(axis=1)
    assert np.all(rows[:14] == 0) and np.all(rows[-14:] == 0)  # black padding above and below
    assert np.allclose(rows[16:24], 1.0) and (rows > 0.5).sum() == 10  # the bar is 40/4 high


def test_window_formula_known_values():
    values = np.array([-1000, -160, -159, 39.5, 239, 239.5, 3000])
    np.testing.assert_allclose(
        convert.window(values, 40, 400), [0, 0, 1 / 399, 0.5, 1, 1, 1], atol=1e-6
    )
    np.testing.assert_array_equal(convert.window(np.array([9.4, 9.6]), 10, 1), [0, 1])
    with pytest.raises(ValueError):
        convert.window(values, 40, 0.5)


def test_sample_frames_uniform_and_repeating():
    clip = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None] * 10, 12, 1)[..., None]
    clip = np.repeat(clip, 12, 2)  # frame t is constant 10 t
    sampled = convert.sample_frames(clip, 5, 6, 1)
    assert sampled.shape == (5, 6, 6, 1) and sampled.dtype == np.uint8
    np.testing.assert_array_equal(sampled[:, 0, 0, 0], [10, 30, 50, 70, 90])
    short = convert.sample_frames(clip[:3], 6, 6, 3)
    assert short.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(short[:, 3, 3, 0], [0, 0, 10, 10, 20, 20])


def test_resample_keeps_frequency_and_amplitude():
    t = np.arange(10 * 500) / 500
    sine = (1.5 * np.sin(2 * np.pi * 10 * t))[:, None]
    out = convert.resample_signal(sine, 500, 100, 10)
    assert out.shape == (1000, 1) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out[:, 0]))
    assert np.fft.rfftfreq(1000, 1 / 100)[spectrum.argmax()] == 10.0
    assert 2 * spectrum.max() / 1000 == pytest.approx(1.5, rel=0.02)
    ramp = np.arange(1000, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(
        convert.resample_signal(ramp, 100, 100, 5)[:, 0], ramp[250:750, 0]
    )
    padded = convert.resample_signal(ramp[:200], 100, 100, 5)
    assert (padded[:200, 0] == ramp[:200, 0]).all() and (padded[200:] == 0).all()
    assert convert.resample_signal(np.ones((360, 2)), 360, 500, 1).shape == (500, 2)


def test_place_leads_by_name_and_alias():
    signal = np.stack([np.full(4, 1.0), np.full(4, 5.0)], axis=1)
    placed, mask = convert.place_leads(signal, ["II", "V5"])
    assert placed.shape == (4, 12) and mask.dtype == np.uint8
    assert mask.tolist() == [int(n in ("II", "V5")) for n in schema.ECG_LEADS]
    assert (placed[:, 1] == 1).all() and (placed[:, 10] == 5).all() and placed.sum() == 24
    names = ["MLII", "avr", "Lead V1", "D1", "-aVR", "Lead I (Einthoven)", "ABP"]
    _, mask = convert.place_leads(np.zeros((3, len(names))), names)
    assert [n for n, m in zip(schema.ECG_LEADS, mask, strict=True) if m] == ["I", "II", "aVR", "V1"]
    with pytest.raises(FormatError, match="no ECG lead"):
        convert.place_leads(np.zeros((3, 2)), ["-aVR", "RESP"], path="rec.hea")


# --- ECG files --------------------------------------------------------------------------------


def _write_wfdb(folder, seconds: float = 2.0):
    t = np.arange(int(seconds * 250)) / 250
    signal = np.stack(
        [np.sin(2 * np.pi * t), 0.5 * np.cos(2 * np.pi * t), 800 * np.sin(4 * np.pi * t), 80 + t],
        axis=1,
    )
    wfdb.wrsamp(
        "rec",
        fs=250,
        units=["mV", "mV", "uV", "mmHg"],
        sig_name=["I", "MLII", "V5", "ABP"],
        p_signal=signal,
        fmt=["16"] * 4,
        adc_gain=[1000.0, 1000.0, 10.0, 100.0],
        baseline=[0] * 4,
        write_dir=str(folder),
    )
    return signal


def test_wfdb_round_trip_in_millivolts(tmp_path):
    signal = _write_wfdb(tmp_path)
    for path in (tmp_path / "rec.hea", tmp_path / "rec"):
        item = read_ecg(path)
        assert item.rate_hz == 250.0 and item.lead_names == ("I", "II", "V5")  # ABP dropped
        expected = signal[:, :3] / [1, 1, 1000]
        np.testing.assert_allclose(item.signal, expected, atol=0.5 / 1000 + 1e-6)
    with pytest.raises(ValueError, match="apply to .npy and .csv"):
        read_ecg(tmp_path / "rec.hea", rate_hz=500)


def test_wfdb_truncated_or_headless(tmp_path):
    _write_wfdb(tmp_path)
    data = (tmp_path / "rec.dat").read_bytes()
    (tmp_path / "rec.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="unreadable WFDB"):
        read_ecg(tmp_path / "rec.hea")
    with pytest.raises(FormatError, match="missing WFDB header"):
        read_ecg(tmp_path / "other.dat")


def test_npy_with_sidecar_leads_first_in_microvolts(tmp_path):
    signal = np.random.default_rng(0).normal(size=(3, 500)).astype(np.float32) * 1000
    np.save(tmp_path / "ecg.npy", signal)
    with pytest.raises(FormatError, match="missing sidecar .*ecg.json"):
        read_ecg(tmp_path / "ecg.npy")
    meta = {"rate_hz": 500, "leads": ["I", "aVL", "V6"], "units": "uV"}
    (tmp_path / "ecg.json").write_text(json.dumps(meta))
    item = read_ecg(tmp_path / "ecg.npy")
    assert item.signal.shape == (500, 3) and item.lead_names == ("I", "aVL", "V6")
    np.testing.assert_allclose(item.signal, signal.T / 1000, rtol=1e-6)
    assert read_ecg(tmp_path / "ecg.npy", rate_hz=250).rate_hz == 250.0


def _mark_unpickled():
    raise AssertionError("the reader unpickled the file")


class _Payload:
    def __reduce__(self):
        return _mark_unpickled, ()


def test_pickle_bearing_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([_Payload()], dtype=object), allow_pickle=True)
    (tmp_path / "evil.json").write_text(json.dumps({"rate_hz": 500, "leads": ["I"]}))
    with pytest.raises(FormatError, match="Object arrays cannot be loaded"):
        read_ecg(tmp_path / "evil.npy")


def test_csv_ecg_with_header_rate_override_and_bad_cell(tmp_path):
    path = tmp_path / "ecg.csv"
    path.write_text("II,V1\n0.1,0.2\n0.3,0.4\n\n0.5,0.6\n")
    item = read_ecg(path, rate_hz=100)
    assert item.lead_names == ("II", "V1") and item.rate_hz == 100.0
    np.testing.assert_allclose(item.signal, [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], rtol=1e-6)
    with pytest.raises(FormatError, match="missing sidecar"):
        read_ecg(path)
    (tmp_path / "ecg.json").write_text(json.dumps({"rate_hz": 500}))
    assert read_ecg(path).rate_hz == 500.0
    path.write_text("II,V1\n0.1,0.2\n0.3,high\n")
    with pytest.raises(FormatError, match="line 3: non-numeric value 'high'"):
        read_ecg(path)
    path.write_text("0.1,0.2\n0.3,0.4\n")
    with pytest.raises(FormatError, match="header of lead names"):
        read_ecg(path, lead_names=["I", "II"])


# --- manifests and images ---------------------------------------------------------------------


def test_csv_manifest_with_labels_and_demographics(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text(
        "\ufeffpatient_id,image,report,label_effusion,label_nodule,age,sex,risk\n"
        'p1,./images/a.png,"Small effusion,\nleft.",1,0,64.5,F,1\n'
        "p2,images\\b.png,,,1,,male,\n"
    )
    rows = read_manifest(path)
    assert rows[0] == ManifestRow(
        "p1",
        image="images/a.png",
        report="Small effusion,\nleft.",
        labels={"effusion": 1, "nodule": 0},
        risk=1,
        age=64.5,
        sex=0,
    )
    assert rows[1] == ManifestRow("p2", image="images/b.png", labels={"nodule": 1}, sex=1)


def test_jsonl_manifest_with_labels_object(tmp_path):
    path = tmp_path / "manifest.jsonl"
    records = [
        {"patient_id": 7, "signal": "ecg/7.hea", "labels": {"afib": 1}, "label_ref": 0},
        {"patient_id": "8", "video": "echo/8.mp4", "report": "Normal.", "age": 40},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    rows = read_manifest(path)
    assert rows[0] == ManifestRow("7", signal="ecg/7.hea", labels={"afib": 1, "ref": 0})
    assert rows[1] == ManifestRow("8", video="echo/8.mp4", report="Normal.", age=40.0)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("patient_id,image\np1,../secret.png\n", "line 2: image path '../secret.png' leaves"),
        ("patient_id,image\np1,a/../../b.png\n", "leaves the manifest's folder"),
        ("patient_id,image\np1,/etc/passwd\n", "line 2: image path '/etc/passwd' leaves"),
        ("patient_id,image\np1,C:\\x.png\n", "leaves the manifest's folder"),
        ("image,report\na.png,x\n", "missing column 'patient_id'"),
        ("patient_id,age\np1,3\n", "none of the columns"),
        ("patient_id,image,label_x\np1,a.png,-1\n", "line 2: label_x = -1 is outside"),
        ("patient_id,image,sex\np1,a.png,x\n", "line 2: sex must be"),
        ("patient_id,image\np1,a.png,extra\n", "line 2: 3 fields, 2 columns"),
        ("patient_id,image,report\np1,,\n", "line 2: none of"),
    ],
)
def test_bad_manifests_name_file_and_line(tmp_path, text, reason):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    with pytest.raises(FormatError, match=re.escape(reason)) as e:
        read_manifest(path)
    assert str(path) in str(e.value)


def test_read_image_modes(tmp_path):
    grey16 = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), grey16 / 65535, atol=1e-7)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), np.tile([1, 0, 0], (2, 2, 1)))
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (2, 2, 3)
    Image.fromarray(np.full((3, 4), 51, np.uint8)).save(tmp_path / "grey.jpg")
    grey = read_image(tmp_path / "grey.jpg")
    assert grey.shape == (3, 4) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 0.2, atol=0.01)


def test_truncated_or_fake_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    cut = _truncated_copy(tmp_path / "full.png", tmp_path / "cut.png", 0.5)
    with pytest.raises(FormatError, match="unreadable image"):
        read_image(cut)
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(FormatError, match="cannot identify image"):
        read_image(tmp_path / "fake.png")


# --- video ------------------------------------------------------------------------------------


def _write_mp4(path, frames: int = 20, fps: int = 10, movflags: str = ""):
    """A bright 8x8 square moving 2 pixels right per frame over a black 32x48 background."""
    options = {"movflags": movflags} if movflags else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for t in range(frames):
            image = np.zeros((32, 48, 3), np.uint8)
            image[8:16, 2 * t : 2 * t + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_mp4_round_trip(tmp_path):
    _write_mp4(tmp_path / "clip.mp4")
    item = read_video(tmp_path / "clip.mp4")
    assert item.frames.shape == (20, 32, 48, 3) and item.frames.dtype == np.uint8
    assert item.fps == 10.0
    left_edges = [int(np.argmax(frame[12, :, 1] > 128)) for frame in item.frames]
    assert left_edges == [2 * t for t in range(20)]
    sampled = read_video(tmp_path / "clip.mp4", frames=5).frames  # only these are kept
    left_edges = [int(np.argmax(frame[12, :, 1] > 128)) for frame in sampled]
    assert left_edges == [2 * t for t in convert.frame_indices(20, 5)] == [4, 12, 20, 28, 36]
    assert len(read_video(tmp_path / "clip.mp4", frames=30).frames) == 20  # no repeats


def test_truncated_empty_and_audio_only_video(tmp_path):
    _write_mp4(tmp_path / "clip.mp4")
    for fraction in (0.3, 0.5, 0.9):  # the index is written last: a cut loses it
        cut = _truncated_copy(tmp_path / "clip.mp4", tmp_path / f"cut{fraction}.mp4", fraction)
        with pytest.raises(FormatError):
            read_video(cut)
    _write_mp4(tmp_path / "fast.mp4", movflags="faststart")  # index first: decodes, then fails
    cut = _truncated_copy(tmp_path / "fast.mp4", tmp_path / "cut_fast.mp4", 0.9)
    with pytest.raises(FormatError, match="corrupt video after [1-9][0-9]* frames"):
        read_video(cut)
    with pytest.raises(FormatError, match="corrupt video after"):  # damage after the samples
        read_video(cut, frames=1)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(FormatError):
        read_video(tmp_path / "empty.mp4")
    with av.open(str(tmp_path / "tone.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
    with pytest.raises(FormatError, match="no video stream"):
        read_video(tmp_path / "tone.wav")


# --- fuzzing: any bytes give FormatError or a result, never another exception -----------------


def _read_bytes(path, data: bytes, reader):
    path.write_bytes(data)
    with contextlib.suppress(FormatError):
        reader(path)


@given(data=st.binary(max_size=2048), preamble=st.booleans())
@pytest.mark.filterwarnings("ignore")
def test_fuzz_dicom_random_bytes(tmp_path, data, preamble):
    _read_bytes(tmp_path / "x.dcm", DICOM_PREAMBLE + data if preamble else data, read_dicom)


@given(
    edits=st.lists(st.tuples(st.integers(0, 1500), st.binary(min_size=1, max_size=4)), max_size=6),
    cut=st.integers(200, 40000),
)
@pytest.mark.filterwarnings("ignore")
def test_fuzz_dicom_damaged_ct(tmp_path, edits, cut):
    data = bytearray(Path(_dicom("CT_small.dcm")).read_bytes()[:cut])
    for offset, patch in edits:
        data[offset : offset + len(patch)] = patch
    _read_bytes(tmp_path / "x.dcm", bytes(data), read_dicom)


@given(data=st.binary(max_size=2048), header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n"]))
@pytest.mark.filterwarnings("ignore")
def test_fuzz_image_random_bytes(tmp_path, data, header):
    _read_bytes(tmp_path / "x.png", header + data, read_image)


@given(data=st.binary(max_size=1024), suffix=st.sampled_from([".npy", ".csv"]), magic=st.booleans())
def test_fuzz_ecg_random_bytes(tmp_path, data, suffix, magic):
    (tmp_path / "x.json").write_text(json.dumps({"rate_hz": 500, "leads": ["I", "II"]}))
    _read_bytes(tmp_path / f"x{suffix}", (NPY_MAGIC if magic else b"") + data, read_ecg)


@given(
    text=st.text(alphabet=st.sampled_from('patient_id,image\n"{}:[]\\./-1a'), max_size=200),
    suffix=st.sampled_from([".csv", ".jsonl"]),
)
def test_fuzz_manifest_random_text(tmp_path, text, suffix):
    _read_bytes(tmp_path / f"m{suffix}", text.encode(), read_manifest)


@given(data=st.binary(max_size=4096))
def test_fuzz_video_random_bytes(tmp_path, data):
    _read_bytes(tmp_path / "x.mp4", data, read_video)
