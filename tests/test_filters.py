import numpy as np
import pytest
import scipy.signal

from mmjax.config import ConfigError, DataConfig
from mmjax.data import filters, pipeline, schema, shards, synthmed

SECONDS = 10.0
UNRECORDED = [schema.ECG_LEADS.index(name) for name in ("aVR", "V3")]
ECG_FILTERS = {"bandpass_hz": (0.5, 40.0), "notch_hz": (50.0, 60.0), "baseline": "median",
               "standardize": True}


def _ecg(rate: int, noise: bool = False, index: int = 3) -> np.ndarray:
    """A SynthMed 12-lead ECG in mV, float64; without noise, the clean signal."""
    patient = synthmed.sample_patient(0, index)
    rng = np.random.default_rng(index)
    return synthmed.simulate_ecg(patient, rate, SECONDS, rng, noise=noise).astype(np.float64)


def _seconds(rate: int) -> np.ndarray:
    return np.arange(round(rate * SECONDS))[:, None] / rate


def _power(signal, rate, low, high, trim_s=0.0):
    """Welch power per lead in [low, high] Hz, 0.1 Hz resolution, away from the ends.

    A narrow notch rings for ~Q / (pi f) = 0.2 s at the record's ends (why the pipeline
    filters before it crops); `trim_s` leaves that out of the measurement."""
    trim = round(trim_s * rate)
    signal = signal[trim : len(signal) - trim]
    hertz, psd = scipy.signal.welch(signal, rate, nperseg=min(len(signal), 10 * rate), axis=0)
    return psd[(hertz >= low) & (hertz <= high)].sum(axis=0)


def _db(after, before):
    return 10 * np.log10(np.max(after / before))


def test_mains_tones_are_harmonics_below_nyquist_or_the_alias_above():
    assert filters.mains_tones((50.0, 60.0), 500) == [50, 60, 100, 120, 150, 180, 200, 240, 250]
    assert filters.mains_tones((50.0, 60.0), 100) == [40.0, 50.0]  # 60 folds to 40; 50 at Nyquist
    assert filters.mains_tones((60.0,), 250) == [60.0, 120.0]  # no scattered harmonic aliases
    assert filters.mains_tones((50.0,), 50) == []  # folds to 0 Hz: an offset, not a hum


def test_notch_removes_50_hz_hum_and_keeps_the_ecg_band():
    rate = 500
    clean = _ecg(rate)
    noisy = clean + 0.1 * np.sin(2 * np.pi * 50.0 * _seconds(rate) + 0.7)
    cleaned = filters.clean_signal(noisy, rate, notch_hz=(50.0, 60.0))
    hum = _db(_power(cleaned, rate, 49.5, 50.5, 1.0), _power(noisy, rate, 49.5, 50.5, 1.0))
    assert hum < -40, hum
    kept = _power(cleaned, rate, 0.5, 40.0) / _power(clean, rate, 0.5, 40.0)
    np.testing.assert_allclose(kept, 1.0, atol=0.02)


@pytest.mark.parametrize("mains", [60.0, 50.0])
def test_alias_aware_notch_removes_hum_folded_into_a_100_hz_recording(mains):
    rate = 100
    tone = {60.0: 40.0, 50.0: 50.0}[mains]  # 60 Hz folds to 40 Hz; 50 Hz sits at Nyquist
    clean = _ecg(rate)
    noisy = clean + 0.1 * np.sin(2 * np.pi * mains * _seconds(rate) + 0.7)
    cleaned = filters.clean_signal(noisy, rate, notch_hz=(mains,))
    band = (tone - 0.5, tone + 0.5)
    hum = _db(_power(cleaned, rate, *band, 1.0), _power(noisy, rate, *band, 1.0))
    assert hum < -40, hum
    kept = _power(cleaned, rate, 0.5, 30.0) / _power(clean, rate, 0.5, 30.0)
    np.testing.assert_allclose(kept, 1.0, atol=0.02)


@pytest.mark.parametrize("method", [{"bandpass_hz": (0.5, 40.0)}, {"baseline": "median"}])
def test_baseline_wander_is_removed(method):
    rate = 100
    t = _seconds(rate)
    drift = 0.3 * np.sin(2 * np.pi * 0.15 * t + 1.0) + 0.2 * np.sin(2 * np.pi * 0.3 * t) + 0.05 * t
    wandering = _ecg(rate) + drift
    cleaned = filters.clean_signal(wandering, rate, **method)
    left = _power(cleaned, rate, 0.0, 0.35) / _power(wandering, rate, 0.0, 0.35)
    assert left.max() < 0.01, left


def test_standardisation_is_per_recorded_lead_and_unrecorded_leads_stay_zero():
    rate = 100
    noisy = _ecg(rate, noise=True)
    noisy[:, UNRECORDED] = 0.0
    noisy[:, 1] = 0.3  # a flat recorded lead stays flat instead of becoming noise
    recorded = np.ones(12, bool)
    recorded[UNRECORDED] = False
    for leads in (recorded, None):  # None: leads that are all zero are unrecorded
        cleaned = filters.clean_signal(noisy, rate, **ECG_FILTERS, leads=leads)
        assert cleaned.dtype == np.float32
        assert np.all(cleaned[:, UNRECORDED] == 0) and np.all(cleaned[:, 1] == 0)
        live = np.delete(cleaned, [*UNRECORDED, 1], axis=1)
        np.testing.assert_allclose(live.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(live.std(axis=0), 1.0, atol=1e-5)
    stray = noisy.copy()
    stray[:, UNRECORDED] = 1.0  # a lead marked unrecorded is zero whatever it holds
    cleaned = filters.clean_signal(stray, rate, standardize=True, leads=recorded)
    assert np.all(cleaned[:, UNRECORDED] == 0)


def test_filters_remove_most_of_synthmeds_artefacts():
    rate, kwargs, left = 100, {"bandpass_hz": (0.5, 40.0), "notch_hz": (50.0, 60.0)}, []
    for index in range(6):
        noisy, clean = _ecg(rate, noise=True, index=index), _ecg(rate, index=index)
        target = filters.clean_signal(clean, rate, **kwargs)
        error = filters.clean_signal(noisy, rate, **kwargs) - target
        left.append(np.mean(error**2) / np.mean((noisy - clean) ** 2))
    # What is left is white noise in the band and wander near the 0.5 Hz edge.
    assert max(left) < 0.1, left


@pytest.mark.parametrize("kwargs, key", [
    ({"bandpass_hz": (40.0, 0.5)}, "data.signal_bandpass_hz"),
    ({"bandpass_hz": (-0.5, 40.0)}, "data.signal_bandpass_hz"),
    ({"bandpass_hz": (46.0, 60.0)}, "data.signal_bandpass_hz"),  # high clipped to 45 Hz
    ({"bandpass_hz": (0.5,)}, "data.signal_bandpass_hz"),
    ({"notch_hz": (-50.0,)}, "data.signal_notch_hz"),
    ({"baseline": "spline"}, "data.signal_baseline"),
])
def test_bad_settings_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        filters.clean_signal(np.ones((1000, 12)), 100, **kwargs)


def test_too_short_or_rateless_signals_name_the_config_key():
    with pytest.raises(ConfigError, match="data.signal_bandpass_hz.*too short"):
        filters.clean_signal(np.ones((20, 12)), 100, bandpass_hz=(0.5, 40.0))
    with pytest.raises(ConfigError, match="data.signal_notch_hz.*signal_rate_hz"):
        filters.clean_signal(np.ones((1000, 12)), None, notch_hz=(50.0,))


def test_a_high_edge_above_nyquist_is_clipped():
    signal = _ecg(100, noise=True)
    np.testing.assert_array_equal(
        filters.clean_signal(signal, 100, bandpass_hz=(0.5, 200.0)),
        filters.clean_signal(signal, 100, bandpass_hz=(0.5, filters.MAX_HIGH_EDGE * 50)),
    )


@pytest.fixture(scope="module")
def ecg_source(tmp_path_factory):
    """A stored ECG dataset at 100 Hz (float16 in the shards, as SynthMed writes it)."""
    rate, leads = 100, np.ones(12, np.uint8)
    leads[UNRECORDED] = 0
    records = []
    for i in range(3):
        signal = _ecg(rate, noise=True, index=i)
        signal[:, UNRECORDED] = 0.0
        records.append({"patient_id": f"p{i}", "signal": signal.astype(np.float16),
                        "signal_leads": leads, "labels": np.zeros(2, np.uint8)})
    path = tmp_path_factory.mktemp("ecg")
    shards.write_dataset(path, "ecg", {"eval": records},
                         {"patient_id": (), "signal": (1000, 12), "signal_leads": (12,),
                          "labels": (2,)}, ["a", "b"], {"signal_rate_hz": rate})
    return pipeline.open_source(str(path), "eval")


def _transform(source, **overrides):
    cfg = DataConfig(modalities=("signal",), augment=False, signal_seconds=4.0, **overrides)
    return pipeline.ExampleTransform(cfg, source.manifest.fields, None, 2, 100)


def test_pipeline_filters_the_whole_record_then_crops(ecg_source):
    transform = _transform(ecg_source, **{f"signal_{k}": v for k, v in ECG_FILTERS.items()})
    for i in range(len(ecg_source)):
        record = ecg_source[i]
        window = transform(record)["signal"]
        cleaned = filters.clean_signal(record["signal"], 100, **ECG_FILTERS,
                                       leads=record["signal_leads"])
        np.testing.assert_array_equal(window, cleaned[300:700])  # the centred 4 s


def test_pipeline_defaults_pass_the_stored_signal_through(ecg_source):
    transform = _transform(ecg_source)
    for i in range(len(ecg_source)):
        record = ecg_source[i]
        window = transform(record)["signal"]
        assert window.dtype == np.float32
        np.testing.assert_array_equal(window, record["signal"].astype(np.float32)[300:700])
