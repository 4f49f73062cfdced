"""ECG files -> millivolt signal, rate and lead names, dispatched on the file suffix.

WFDB and DICOM describe themselves. Bare arrays (.npy, and .csv whose header row names
the leads) take their rate, lead names and units from a sidecar `<stem>.json`
({"rate_hz": 500, "leads": [...], "units": "mV"}) or from the `rate_hz`/`lead_names`
arguments, which win over the sidecar and the CSV header.

A rate outside `convert.SIGNAL_RATE_HZ` is a FormatError, and so are voltage samples that
are NaN, Inf or beyond float16 (as signals are stored), counted: in a bare array they are
damage, not gaps (WFDB alone has a missing value, see `_read_wfdb`).
"""

import csv
import dataclasses
import json
import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

from mmjax.data.formats import FormatError, convert, dicom, existing_file

WFDB_SUFFIXES = ("", ".hea", ".dat", ".mat")  # a record is named by its header's stem
DEFAULT_UNITS = "mV"


@dataclasses.dataclass(frozen=True, eq=False)
class SignalItem:
    signal: np.ndarray  # float32 [N, L] millivolts
    rate_hz: float
    lead_names: tuple[str, ...]  # schema names where recognised, else the file's label


def read_ecg(
    path, rate_hz: float | None = None, lead_names: Sequence[str] | None = None
) -> SignalItem:
    """Voltage channels of an ECG record; other channels (pressure, respiration) are dropped."""
    suffix = Path(path).suffix.lower()
    if suffix in (".npy", ".csv"):
        return _read_array_file(existing_file(path), suffix, rate_hz, lead_names)
    if rate_hz is not None or lead_names is not None:
        raise ValueError(f"rate_hz and lead_names apply to .npy and .csv, not {suffix!r} files")
    if suffix == ".dcm":
        item = dicom.read_dicom(path)
        if item.kind != "signal":
            raise FormatError(path, f"DICOM holds a {item.kind}, not a waveform")
        return SignalItem(item.signal, item.rate_hz, item.lead_names)
    if suffix in WFDB_SUFFIXES:
        return _read_wfdb(path)
    raise FormatError(path, f"unknown ECG file type {suffix!r}")


def _signal_item(path, signal, rate_hz, names: Sequence[str], units: Sequence[str]) -> SignalItem:
    """Checked rate and shape; channels converted to mV (see `convert.millivolt_channels`)."""
    if len(signal) == 0:
        raise FormatError(path, "no samples")
    rate_hz = convert.check_rate(path, rate_hz, convert.SIGNAL_RATE_HZ, "sampling rate (Hz)")
    millivolts, kept = convert.millivolt_channels(signal, units, path)
    if not kept:
        raise FormatError(path, f"no voltage channel (units {list(units)})")
    labels = tuple(convert.lead_name(names[c]) or names[c] for c in kept)
    return SignalItem(millivolts, rate_hz, labels)


def _read_wfdb(path) -> SignalItem:
    """WFDB's missing value reads as NaN: a channel of nothing else was not recorded and is
    dropped; gaps in the others become 0, so that resampling cannot spread them."""
    record_path = Path(path).with_suffix("")
    header = record_path.with_suffix(".hea")
    if not header.is_file():
        raise FormatError(path, f"missing WFDB header {header}")
    try:
        record = wfdb.rdrecord(str(record_path))
    except Exception as e:
        raise FormatError.caused_by(path, "unreadable WFDB record", e) from e
    if record.p_signal is None or record.p_signal.shape != (record.sig_len, record.n_sig):
        raise FormatError(path, f"header promises {record.sig_len} x {record.n_sig} samples")
    if None in record.sig_name:  # wfdb fills in a signal line cut short
        raise FormatError(path, f"incomplete header: signal names {record.sig_name}")
    missing = np.isnan(record.p_signal)
    recorded = [column for column in range(record.n_sig) if not missing[:, column].all()]
    signal = np.where(missing, 0.0, record.p_signal)[:, recorded]
    names, units = ([values[c] for c in recorded] for values in (record.sig_name, record.units))
    return _signal_item(path, signal, record.fs, names, units)


def _read_array_file(path: str, suffix: str, rate_hz, lead_names) -> SignalItem:
    if suffix == ".npy":
        signal, header = _read_npy(path), None
    else:
        signal, header = _read_csv(path)
    names = lead_names or header
    sidecar = {} if rate_hz is not None and names else _sidecar(path)
    rate = rate_hz if rate_hz is not None else sidecar.get("rate_hz")
    names = names or sidecar.get("leads")
    units = sidecar.get("units", DEFAULT_UNITS)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise FormatError(path, f"sampling rate must be a number, got {rate!r}")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise FormatError(path, f"lead names must be a list of strings, got {names!r}")
    if not isinstance(units, str):
        raise FormatError(path, f"units must be a string, got {units!r}")
    if signal.shape[1] != len(names) and signal.shape[0] == len(names):
        signal = signal.T  # stored leads-first
    if signal.shape[1] != len(names):
        raise FormatError(path, f"signal of shape {signal.shape} does not fit {len(names)} leads")
    return _signal_item(path, signal, rate, names, [units] * len(names))


def _sidecar(path: str) -> dict:
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise FormatError(path, f"missing sidecar {sidecar} (rate_hz, leads, units)")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError.caused_by(sidecar, "unreadable sidecar", e) from e
    if not isinstance(meta, dict):
        raise FormatError(sidecar, "sidecar must hold a JSON object")
    return meta


def _read_npy(path: str) -> np.ndarray:
    """A 2-D numeric .npy array. `read_array` with pickles off rather than `np.load`, which
    would also open .npz archives."""
    try:
        with open(path, "rb") as f:
            signal = np.lib.format.read_array(f, allow_pickle=False)
    except Exception as e:
        raise FormatError.caused_by(path, "unreadable .npy", e) from e
    if signal.dtype.kind not in "iuf":
        raise FormatError(path, f"dtype {signal.dtype} is not real numbers")
    if signal.ndim != 2:
        raise FormatError(path, f"expected a 2-D [samples, leads] array, got shape {signal.shape}")
    return signal


def _read_csv(path: str) -> tuple[np.ndarray, list[str]]:
    """A header of lead names over rows of numbers, one row per sample."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            if not header or all(_is_number(name) for name in header):
                raise FormatError(path, "line 1: expected a header of lead names")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise FormatError(
                        path, f"line {reader.line_num}: {len(row)} values, {len(header)} columns"
                    )
                bad = next((cell for cell in row if not _is_number(cell)), None)
                if bad is not None:
                    raise FormatError(path, f"line {reader.line_num}: non-numeric value {bad!r}")
                rows.append([float(cell) for cell in row])
    except (UnicodeDecodeError, csv.Error) as e:
        raise FormatError.caused_by(path, "unreadable CSV", e) from e
    return np.asarray(rows, np.float64).reshape(-1, len(header)), header


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
