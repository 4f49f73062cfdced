"""SynthMed: determinism, field contracts, latent statistics, that images, reports, echo
clips and ECGs carry the ground truth, and that records lack modalities as real ones do."""

import dataclasses
import functools
import hashlib
import re

import numpy as np
import pytest
import scipy.signal

from mmjax.data import schema, synthmed

IMAGE_SIZE = 64
# How a reader recognises each image finding in a sentence, and a negated sentence.
MENTIONS = {
    "cardiomegaly": r"cardiomegaly|heart|cardiac|cardiothoracic|\bctr\b",
    "pleural_effusion": r"effusion|costophrenic",
    "nodule": r"nodul|\bmass\b",
    "pneumothorax": r"pneumothorax|pleural line",
    "consolidation": r"consolidation|airspace",
}
NEGATION = r"\b(no|not|normal|without|sharp|clear|unremarkable)\b"


@functools.cache
def _patients(count: int = 2000, seed: int = 0) -> tuple[synthmed.Patient, ...]:
    return tuple(synthmed.sample_patient(seed, i) for i in range(count))


@functools.cache
def _corpus(count: int, seed: int, image_size: int) -> dict:
    return synthmed.generate(count, seed, image_size)


def _healthy(count: int) -> list[synthmed.Patient]:
    return [p for p in _patients() if not any(p.findings)][:count]


def _draw(patient: synthmed.Patient, **changes) -> np.ndarray:
    """Windowed image of `patient` with `changes`, under a fixed acquisition."""
    rng = np.random.default_rng([7, patient.patient_id])
    changed = dataclasses.replace(patient, **changes)
    return synthmed.window(synthmed.draw_radiograph(changed, IMAGE_SIZE, rng))


def _change(patient: synthmed.Patient, **changes) -> np.ndarray:
    """What `changes` alone do to the image: same anatomy, pose, exposure and noise."""
    return _draw(patient, **changes) - _draw(patient)


def _own_and_other_side(image: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """The image halves showing the patient's `side` and the opposite side.

    The patient's right is on the image left (radiological convention).
    """
    image_left, image_right = image[:, : IMAGE_SIZE // 2], image[:, IMAGE_SIZE // 2 :]
    return (image_left, image_right) if side == "right" else (image_right, image_left)


# Determinism and contracts.


def test_same_seed_same_corpus_other_seed_other_corpus():
    first, again = synthmed.generate(6, seed=3, image_size=32), _corpus(6, 3, 32)
    other = synthmed.generate(6, seed=4, image_size=32)
    for key in first:
        np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(again[key]), err_msg=key)
    assert not np.array_equal(first["image"], other["image"])
    assert first["report"] != other["report"]


def test_patients_depend_only_on_seed_and_index():
    whole = _corpus(20, 0, 32)
    part = synthmed.generate(10, seed=0, image_size=32, start=5)
    np.testing.assert_array_equal(part["patient_id"], np.arange(5, 15))
    for key in whole:
        np.testing.assert_array_equal(
            np.asarray(part[key]), np.asarray(whole[key])[5:15], err_msg=key
        )
    assert synthmed.sample_patient(0, 7) == _patients()[7]
    assert synthmed.sample_patient(1, 7) != _patients()[7]


def test_fields_have_documented_shapes_dtypes_and_ranges():
    corpus, n = _corpus(24, 0, 48), 24
    assert corpus["patient_id"].dtype == np.int64
    assert corpus["image"].shape == (n, 48, 48) and corpus["image"].dtype == np.uint16
    assert corpus["image"].max() <= synthmed.MAX_PIXEL
    assert (corpus["image"].reshape(n, -1).std(axis=1) > 100).all()
    assert corpus["labels"].shape == (n, len(synthmed.FINDINGS))
    assert corpus["labels"].dtype == np.uint8 and set(np.unique(corpus["labels"])) <= {0, 1}
    assert corpus["age"].dtype == np.float32
    assert ((corpus["age"] >= 20) & (corpus["age"] <= 90)).all()
    for key in ("sex", "risk"):
        assert corpus[key].dtype == np.uint8 and set(np.unique(corpus[key])) <= {0, 1}
    assert len(corpus["report"]) == n
    assert all("FINDINGS: " in r and "\nIMPRESSION: " in r for r in corpus["report"])
    patients = _patients()[:n]
    np.testing.assert_array_equal(corpus["labels"], [p.findings for p in patients])
    np.testing.assert_array_equal(corpus["sex"], [p.sex == "M" for p in patients])


def test_any_size_from_the_minimum_and_no_smaller():
    patient = _patients()[0]
    for size in (synthmed.MIN_IMAGE_SIZE, 37, 128):
        image = synthmed.draw_radiograph(patient, size, np.random.default_rng(0))
        assert image.shape == (size, size) and image.dtype == np.uint16
    with pytest.raises(ValueError, match="minimum"):
        synthmed.draw_radiograph(patient, synthmed.MIN_IMAGE_SIZE - 1, np.random.default_rng(0))
    assert synthmed.generate(0)["image"].shape == (0, 64, 64)


def test_patient_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _patients()[0].age = 30.0


def test_window_is_dicom_linear():
    image = np.array([0, 1000, 2048, 3000, 4095], np.uint16)
    np.testing.assert_allclose(synthmed.window(image), image / 4095, atol=1e-3)
    narrow = synthmed.window(image, center=2048, width=1001)
    np.testing.assert_allclose(narrow, [0, 0, 0.5005, 1, 1], atol=1e-4)
    assert narrow.dtype == np.float32
    with pytest.raises(ValueError):
        synthmed.window(image, width=1)


# Latent model.


def test_prevalences_are_realistic():
    findings = np.array([p.findings for p in _patients()])
    prevalence = dict(zip(synthmed.FINDINGS, findings.mean(axis=0), strict=True))
    expected = {
        "cardiomegaly": (0.12, 0.30),
        "pleural_effusion": (0.04, 0.16),
        "nodule": (0.10, 0.20),
        "pneumothorax": (0.04, 0.11),
        "consolidation": (0.10, 0.20),
        "atrial_fibrillation": (0.05, 0.15),
        "reduced_ejection_fraction": (0.10, 0.20),
    }
    for name, (low, high) in expected.items():
        assert low < prevalence[name] < high, (name, prevalence[name])
    assert 0.18 < np.mean([p.risk for p in _patients()]) < 0.32


def test_findings_are_correlated_as_in_patients():
    patients = _patients()
    has = {f: np.array([p.has(f) for p in patients]) for f in synthmed.FINDINGS}
    old = np.array([p.age > 70 for p in patients])
    young = np.array([p.age < 50 for p in patients])
    reduced_ef, cardiomegaly = has["reduced_ejection_fraction"], has["cardiomegaly"]
    assert cardiomegaly[reduced_ef].mean() > cardiomegaly[~reduced_ef].mean() + 0.4
    assert has["atrial_fibrillation"][cardiomegaly].mean() > 2 * has["atrial_fibrillation"].mean()
    assert has["pleural_effusion"][reduced_ef].mean() > 2 * has["pleural_effusion"].mean()
    assert reduced_ef[old].mean() > 2 * reduced_ef[young].mean()
    risk = np.array([p.risk for p in patients])
    assert risk[reduced_ef].mean() > risk[~reduced_ef].mean() + 0.2


def test_attributes_agree_with_findings():
    for p in _patients():
        assert (p.effusion is not None) == p.has("pleural_effusion")
        assert (p.nodule is not None) == p.has("nodule")
        assert (p.pneumothorax is not None) == p.has("pneumothorax")
        assert (p.consolidation is not None) == p.has("consolidation")
        assert (p.cardiothoracic_ratio >= 0.55) == p.has("cardiomegaly")
        assert (p.ejection_fraction <= 40) == p.has("reduced_ejection_fraction")
        if p.nodule:
            assert p.nodule.side in synthmed.SIDES and p.nodule.zone in synthmed.ZONES
            assert synthmed.NODULE_SIZE_MM[0] <= p.nodule.size_mm <= synthmed.NODULE_SIZE_MM[1]


# Images carry the findings, on the stated side.


def test_cardiomegaly_widens_the_heart():
    rows = slice(int(0.55 * IMAGE_SIZE), int(0.62 * IMAGE_SIZE))  # just above the diaphragm
    for patient in _healthy(10):
        widths = []
        for ctr in (0.45, 0.65):
            image = _draw(patient, cardiothoracic_ratio=ctr)
            lung, heart = np.percentile(image[rows], [10, 90])
            widths.append((image[rows] > (lung + heart) / 2).sum(axis=1).mean())
        assert widths[1] > widths[0] + 0.1 * IMAGE_SIZE, widths
    # And across the corpus, where every other finding varies as well.
    corpus = _corpus(400, 1, 32)
    middle = synthmed.window(corpus["image"])[:, 17:21, 10:22].mean(axis=(1, 2))
    cardiomegaly = corpus["labels"][:, synthmed.FINDINGS.index("cardiomegaly")] == 1
    assert middle[cardiomegaly].mean() > middle[~cardiomegaly].mean() + 0.02


@pytest.mark.parametrize("side", synthmed.SIDES)
def test_effusion_whitens_the_lower_hemithorax_on_its_side(side):
    for patient in _healthy(5):
        change = _change(patient, effusion=synthmed.Effusion(side, 0.5))
        own, other = _own_and_other_side(change[IMAGE_SIZE // 2 :], side)
        assert own.mean() > 0.01 and np.abs(other).max() < 0.02
        assert change[: IMAGE_SIZE // 3].std() < 0.01  # the upper lungs are untouched


def test_effusion_side_shows_across_the_corpus():
    corpus = _corpus(400, 1, 32)
    lower = synthmed.window(corpus["image"])[:, 18:24]  # rows of the costophrenic angles
    image_left, image_right = lower[:, :, 3:10], lower[:, :, 22:29]
    brighter_left = image_left.mean(axis=(1, 2)) - image_right.mean(axis=(1, 2))
    sides = np.array([p.effusion.side if p.effusion else "none" for p in _patients(400, 1)])
    asymmetry = {side: brighter_left[sides == side].mean() for side in ("right", "none", "left")}
    assert asymmetry["right"] > asymmetry["none"] + 0.03, asymmetry
    assert asymmetry["left"] < asymmetry["none"] - 0.03, asymmetry


@pytest.mark.parametrize("side", synthmed.SIDES)
def test_nodule_appears_in_its_side_and_zone(side):
    patient = _healthy(1)[0]
    rows = []
    for zone in synthmed.ZONES:
        nodule = synthmed.Nodule(side, zone, 20.0, (0.5, 0.5))
        change = _change(patient, nodule=nodule)
        row, column = np.unravel_index(np.argmax(change), change.shape)
        assert change.max() > 0.1
        assert (column < IMAGE_SIZE // 2) == (side == "right")
        rows.append(row)
    assert rows == sorted(rows) and len(set(rows)) == 3


@pytest.mark.parametrize("side", synthmed.SIDES)
def test_pneumothorax_darkens_its_apex_and_shows_a_pleural_line(side):
    for patient in _healthy(5):
        change = _change(patient, pneumothorax=synthmed.Pneumothorax(side, 0.3))
        own, other = _own_and_other_side(change, side)
        assert own[: IMAGE_SIZE // 2].min() < -0.05 and np.abs(other).max() < 0.02
        assert own.max() > 0.01  # the visceral pleural line is brighter than the lung


@pytest.mark.parametrize("side", synthmed.SIDES)
def test_consolidation_whitens_its_side(side):
    for patient in _healthy(5):
        change = _change(patient, consolidation=synthmed.Consolidation(side, "middle"))
        own, other = _own_and_other_side(change, side)
        assert own.max() > 0.1 and own.mean() > 0.002 and np.abs(other).max() < 0.02


def test_healthy_images_vary():
    images = [_draw(p) for p in _healthy(8)]
    for a, b in zip(images, images[1:], strict=False):
        assert np.abs(a - b).mean() > 0.01


# Reports state the findings, never negate a present one, and quote the latent measurements.


def _sentences(report: str) -> list[str]:
    body = [line.split(": ", 1)[1] for line in report.splitlines()[-2:]]  # FINDINGS, IMPRESSION
    return [s for line in body for s in re.split(r"(?<=\.)\s+", line) if s]


@functools.cache
def _reports(count: int = 500) -> tuple[tuple[synthmed.Patient, str], ...]:
    return tuple(
        (p, synthmed.write_report(p, np.random.default_rng([0, p.patient_id, 2])))
        for p in _patients()[:count]
    )


def test_reports_state_present_findings_and_negate_only_absent_ones():
    for patient, report in _reports():
        stated = set()
        for sentence in _sentences(report):
            negated = re.search(NEGATION, sentence, re.IGNORECASE) is not None
            for finding, pattern in MENTIONS.items():
                if re.search(pattern, sentence, re.IGNORECASE):
                    assert patient.has(finding) != negated, (finding, sentence, report)
                    if not negated:
                        stated.add(finding)
        present = {f for f in synthmed.IMAGE_VISIBLE if patient.has(f)}
        assert stated == present, report


def test_reports_quote_sides_zones_and_measurements():
    for patient, report in _reports():
        text = report.lower()
        for match in re.finditer(r"(?:cardiothoracic ratio(?: of)?|ctr) (\d\.\d\d)", text):
            assert match.group(1) == f"{patient.cardiothoracic_ratio:.2f}"
        if patient.nodule:
            assert f"{patient.nodule.size_mm:.0f} mm" in text
            zone = "mid" if patient.nodule.zone == "middle" else patient.nodule.zone
            assert f"{patient.nodule.side} {zone} zone" in text
        for finding in (patient.effusion, patient.pneumothorax, patient.consolidation):
            if finding:
                assert finding.side in text, report
        if "atrial fibrillation" in text:
            assert patient.has("atrial_fibrillation")
        if "ejection fraction" in text:
            assert patient.has("reduced_ejection_fraction")


def test_reports_are_short_and_varied():
    reports = [r for _, r in _reports()]
    words = np.array([len(r.split()) for r in reports])
    assert np.percentile(words, 90) < 60 and words.max() < 100
    assert len(set(reports)) > 0.9 * len(reports)
    impressions = {r.rsplit("IMPRESSION: ", 1)[1] for r in reports}
    assert {"No acute cardiopulmonary abnormality.", "Normal chest radiograph."} <= impressions
    assert any("cardiothoracic ratio" in r for r in reports)
    assert any(r.startswith(("INDICATION:", "CLINICAL HISTORY:")) for r in reports)
    assert any(re.search(r"\b(Possible|Likely|Probable|Cannot exclude)\b", r) for r in reports)


# Echo, ECG and missing modalities.

ECHO_SIZE, ECHO_FRAMES = 64, 16
LV_ROWS, LV_COLUMNS = slice(8, 38), slice(32, 48)  # the left ventricle of a normal-sized heart
DARK = 40  # blood pool; tissue speckle stays well above it
ALL_MODALITIES = schema.MODALITIES
LEADS = {name: i for i, name in enumerate(schema.ECG_LEADS)}


def _findings(*names: str) -> tuple[bool, ...]:
    return tuple(f in names for f in synthmed.FINDINGS)


def _echo(patient: synthmed.Patient, seed: int = 0, **changes) -> np.ndarray:
    """Clip of `patient` with `changes`, under a fixed acquisition and rhythm."""
    changed = dataclasses.replace(patient, **changes)
    rng = np.random.default_rng([seed, patient.patient_id])
    return synthmed.draw_echo(changed, ECHO_FRAMES, ECHO_SIZE, rng)


def _lv_area_change(clips: np.ndarray) -> np.ndarray:
    """(max - min) / max over frames of the dark pixels in the LV region: [..., frames] -> [...]."""
    area = (clips[..., LV_ROWS, LV_COLUMNS] < DARK).sum(axis=(-2, -1))
    return (area.max(-1) - area.min(-1)) / area.max(-1)


def _ecg(patient: synthmed.Patient, rate: int = 100, seed: int = 0, **kwargs) -> np.ndarray:
    rng = np.random.default_rng([seed, patient.patient_id])
    return synthmed.simulate_ecg(patient, rate, 10.0, rng, **kwargs)


def _rr_intervals(ecg: np.ndarray, rate: int) -> np.ndarray:
    """Seconds between QRS complexes: a threshold on lead II's steepness over 80 ms.

    Differencing removes the baseline; the QRS is far steeper than P and T waves.
    """
    steepness = np.abs(np.diff(ecg[:, LEADS["II"]]))
    energy = np.convolve(steepness, np.ones(int(0.08 * rate)), mode="same")
    peaks, _ = scipy.signal.find_peaks(energy, height=0.5 * energy.max(), distance=0.25 * rate)
    return np.diff(peaks) / rate


def test_echo_is_a_sector_scan_black_outside_the_fan():
    clip = _echo(_patients()[0])
    assert clip.shape == (ECHO_FRAMES, ECHO_SIZE, ECHO_SIZE) and clip.dtype == np.uint8
    axis = (np.arange(ECHO_SIZE) + 0.5) / ECHO_SIZE
    lateral, depth = axis[None, :] - 0.5, axis[:, None] - synthmed.PROBE_Y
    radius = np.sqrt(lateral**2 + depth**2) / synthmed.SECTOR_DEPTH
    fan = (radius < 1.0) & (np.abs(np.arctan2(lateral, depth)) < synthmed.SECTOR_HALF_ANGLE)
    assert (clip[:, ~fan] == 0).all()
    assert 40 < clip[:, fan].mean() < 200 and clip[:, fan].std() > 30
    assert np.abs(np.diff(clip.astype(float), axis=0)).mean() > 5  # it moves
    with pytest.raises(ValueError, match="minimum"):
        synthmed.draw_echo(_patients()[0], 4, synthmed.MIN_IMAGE_SIZE - 1, np.random.default_rng(0))


def test_echo_lv_contracts_by_the_ejection_fraction():
    for patient in _healthy(8):
        clips = np.stack(
            [_echo(patient, ejection_fraction=ef, cardiothoracic_ratio=0.46) for ef in (60, 25)]
        )
        normal, reduced = _lv_area_change(clips)
        # Area ratio (1 - EF) ** (2 / 3): 46% and 17% change, less what 10 fps sampling misses.
        assert 0.25 < normal < 0.5 and 0.05 < reduced < 0.25 and normal > reduced + 0.1
        # It beats: somewhere the area dips below halfway, with it above halfway on both sides.
        area = (clips[0][:, LV_ROWS, LV_COLUMNS] < DARK).sum(axis=(1, 2))
        half = (area.max() + area.min()) / 2
        assert any(
            area[:j].max() > half > area[j] and area[j + 1 :].max() > half
            for j in range(1, ECHO_FRAMES - 1)
        ), area


def test_echo_carries_ejection_fraction_and_heart_size_across_the_corpus():
    corpus = synthmed.generate(120, seed=2, image_size=ECHO_SIZE, modalities=("video",))
    has = corpus["has_video"]
    clips, ejection_fraction = corpus["video"][has], corpus["ejection_fraction"][has]
    np.testing.assert_allclose(
        ejection_fraction, [p.ejection_fraction for p in _patients(120, 2) if p.has_echo]
    )
    assert np.corrcoef(_lv_area_change(clips), ejection_fraction)[0, 1] > 0.8
    end_diastolic = (clips[..., LV_ROWS, LV_COLUMNS] < DARK).sum(axis=(2, 3)).max(axis=1)
    cardiomegaly = corpus["labels"][has, synthmed.FINDINGS.index("cardiomegaly")] == 1
    assert end_diastolic[cardiomegaly].mean() > 1.05 * end_diastolic[~cardiomegaly].mean()


@pytest.mark.parametrize("rate", [100, 500])
def test_ecg_leads_agree_as_einthoven_and_goldberger_say(rate):
    for patient in _patients()[:20]:
        for noise in (True, False):
            ecg = _ecg(patient, rate, noise=noise)
            assert ecg.shape == (10 * rate, 12) and ecg.dtype == np.float32
            lead = {name: ecg[:, i] for name, i in LEADS.items()}
            close = functools.partial(np.testing.assert_allclose, atol=1e-5)
            close(lead["III"], lead["II"] - lead["I"])
            close(lead["aVR"], -(lead["I"] + lead["II"]) / 2)
            close(lead["aVL"], lead["I"] - lead["II"] / 2)
            close(lead["aVF"], lead["II"] - lead["I"] / 2)
            close(lead["aVR"] + lead["aVL"] + lead["aVF"], 0.0)
            assert 0.4 < np.ptp(lead["V5"]) < 8 and np.abs(ecg).max() < 10


def test_ecg_noise_is_wander_mains_and_hiss_on_top_of_the_clean_signal():
    rate, ratios = 500, []
    for patient in _healthy(6):
        noisy, clean = _ecg(patient, rate), _ecg(patient, rate, noise=False)
        artefact = noisy[:, LEADS["I"]] - clean[:, LEADS["I"]]
        power = np.abs(np.fft.rfft(noisy[:, LEADS["I"]])) ** 2
        hertz = np.fft.rfftfreq(len(noisy), 1 / rate)
        mains = max(power[hertz == 50.0].item(), power[hertz == 60.0].item())
        ratios.append(mains / np.median(power[(hertz > 30) & (hertz < 100)]))
        slow = np.abs(np.fft.rfft(artefact)) ** 2
        assert slow[hertz < 1].sum() > slow[(hertz > 1) & (hertz < 40)].sum()  # wander dominates
    assert min(ratios) > 10, ratios


def test_ecg_rhythm_is_regular_in_sinus_and_irregular_in_af():
    variation = {}
    for rhythm, findings in (("sinus", _findings()), ("af", _findings("atrial_fibrillation"))):
        variation[rhythm] = []
        for patient in _healthy(10):
            patient = dataclasses.replace(patient, findings=findings)
            for rate in (100, 500):
                intervals = _rr_intervals(_ecg(patient, rate), rate)
                assert 40 < 60 / intervals.mean() < 150 and len(intervals) >= 5
                if rhythm == "sinus":
                    assert abs(60 / intervals.mean() / patient.heart_rate - 1) < 0.1
                variation[rhythm].append(intervals.std() / intervals.mean())
    assert max(variation["sinus"]) < 0.08, variation
    assert np.median(variation["af"]) > 3 * np.median(variation["sinus"]), variation
    assert min(variation["af"]) > 0.08, variation


def test_ecg_qrs_shows_reduced_ejection_fraction_and_cardiomegaly():
    def voltage(patient, findings):
        ecg = _ecg(dataclasses.replace(patient, findings=findings), noise=False)
        return np.ptp(ecg[:, LEADS["V1"]]) + np.ptp(ecg[:, LEADS["V5"]])  # ~ Sokolow-Lyon

    patients = _healthy(40)
    normal = np.array([voltage(p, _findings()) for p in patients])
    reduced = np.array([voltage(p, _findings("reduced_ejection_fraction")) for p in patients])
    enlarged = np.array([voltage(p, _findings("cardiomegaly")) for p in patients])
    assert np.median(reduced / normal) < 0.85
    assert np.mean(enlarged / normal) > 1.1 and (enlarged > 1.25 * normal).mean() > 0.25


def test_ecg_rates_depend_on_rhythm_and_stay_plausible():
    patients = _patients()
    af = np.array([p.has("atrial_fibrillation") for p in patients])
    rate = np.array([p.heart_rate for p in patients])
    assert rate[~af].min() >= 55 and rate[~af].max() <= 95
    assert rate[af].mean() > rate[~af].mean() + 10


# Missing modalities.


def test_some_records_lack_some_modalities_as_in_hospitals():
    patients = _patients()
    has = {k: np.array([getattr(p, k) for p in patients]) for k in synthmed.PRESENCE_FLAGS.values()}
    expected = {"has_image": (0.92, 0.98), "has_echo": (0.54, 0.68), "has_ecg": (0.74, 0.86)}
    expected["has_report"] = (0.95, 0.99)
    for flag, (low, high) in expected.items():
        assert low < has[flag].mean() < high, (flag, has[flag].mean())
    assert np.logical_or.reduce(list(has.values())).all()
    finding = {f: np.array([p.has(f) for p in patients]) for f in synthmed.FINDINGS}
    suspect = finding["reduced_ejection_fraction"] | finding["cardiomegaly"]
    assert has["has_echo"][suspect].mean() > has["has_echo"][~suspect].mean() + 0.2
    af = finding["atrial_fibrillation"]
    assert has["has_ecg"][af].mean() > has["has_ecg"][~af].mean() + 0.1


def test_new_modalities_leave_the_original_corpus_bit_identical():
    # Streams 0-2 predate echo, ECG and presence; this digest was taken before they existed.
    corpus = _corpus(50, 0, 16)
    digest = hashlib.sha256("\n\n".join(corpus["report"]).encode())
    digest.update(corpus["labels"].tobytes())
    assert digest.hexdigest()[:16] == "91390a5e9ff8d49c"  # reports and labels
    assert set(corpus) == {"patient_id", "image", "report", "labels", "age", "sex", "risk"}


def test_named_modalities_come_with_presence_masks_and_blank_absent_entries():
    n, seed, size, frames, rate = 24, 3, 32, 8, 100  # seed 3 lacks each modality at least once
    corpus = synthmed.generate(
        n, seed, size, frames=frames, signal_rate_hz=rate, modalities=ALL_MODALITIES
    )
    legacy = _corpus(n, seed, size)
    patients = _patients(n, seed)
    assert corpus["video"].shape == (n, frames, size, size) and corpus["video"].dtype == np.uint8
    assert corpus["signal"].shape == (n, 10 * rate, 12) and corpus["signal"].dtype == np.float32
    assert corpus["image"].shape == (n, size, size) and len(corpus["report"]) == n
    assert corpus["audio"].shape == (n, 10000) and corpus["audio"].dtype == np.float32
    assert list(corpus["murmur"]) == [p.murmur for p in patients]
    np.testing.assert_allclose(corpus["ejection_fraction"], [p.ejection_fraction for p in patients])
    for modality, flag in synthmed.PRESENCE_FLAGS.items():
        has = corpus[f"has_{modality}"]
        assert has.dtype == bool and has.shape == (n,)
        np.testing.assert_array_equal(has, [getattr(p, flag) for p in patients])
        assert 0 < has.sum() < n, modality
        for row in range(n):
            entry = corpus[modality][row]
            if modality == "report":
                assert (entry == legacy["report"][row]) if has[row] else (entry == "")
            elif modality == "image":
                expected = legacy["image"][row] if has[row] else 0
                np.testing.assert_array_equal(entry, expected)
            else:
                assert np.any(entry != 0) == has[row], (modality, row)
    part = synthmed.generate(
        8, seed, size, start=10, frames=frames, signal_rate_hz=rate, modalities=("signal", "video")
    )
    for key in ("video", "signal", "has_video", "has_signal"):
        np.testing.assert_array_equal(part[key], corpus[key][10:18], err_msg=key)
    empty = synthmed.generate(0, modalities=ALL_MODALITIES)
    assert empty["video"].shape == (0, 16, 64, 64) and empty["signal"].shape == (0, 1000, 12)
    assert all(empty[f"has_{m}"].dtype == bool for m in ALL_MODALITIES)
    with pytest.raises(ValueError, match="unknown modalities"):
        synthmed.generate(2, modalities=("image", "smell"))


def test_heart_sound_latents_follow_the_heart():
    """Murmurs and S3 come with a dilated, failing ventricle (regurgitation) or age (stenosis);
    the latents are drawn from their own stream, so adding them changed nothing else."""
    patients = _patients(3000, 0)
    reduced = np.array([p.has("reduced_ejection_fraction") for p in patients])
    murmur = np.array([p.murmur for p in patients])
    third = np.array([p.third_sound for p in patients])
    old = np.array([p.age >= 70 for p in patients])
    assert (murmur[reduced] == "mitral_regurgitation").mean() > 0.5
    assert (murmur[~reduced] == "mitral_regurgitation").mean() < 0.05
    assert third[reduced].mean() > 0.5 and third[~reduced].mean() < 0.05
    stenosis = murmur == "aortic_stenosis"
    assert stenosis[old].mean() > 3 * stenosis[~old].mean()
    has_audio = np.array([p.has_audio for p in patients])
    assert has_audio[reduced].mean() > has_audio[~reduced].mean() + 0.15
