"""The `mmjax` command, run as a user runs it."""

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, SMOKE_CONFIG, SMOKE_EVAL

import mmjax
from mmjax.cli import main


def test_version_is_the_packages(capsys):
    """`mmjax --version` and `mmjax.__version__` say the version pip installed."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"mmjax {mmjax.__version__}"
    assert importlib.metadata.version("mmjax") == mmjax.__version__
    assert (REPO / "mmjax" / "py.typed").is_file()
    assert f"## {mmjax.__version__}" in (REPO / "CHANGELOG.md").read_text()


def _short_run(dataset):
    return ["--set", f"data.path={dataset}", "--set", "train.num_steps=4",
            "--set", "train.log_every=2"]


def test_train_end_to_end_stopped_and_resumed(tmp_path, capsys, smoke_dataset):
    workdir = tmp_path / "run"
    arguments = ["train", "--config", str(SMOKE_CONFIG), "--workdir", str(workdir),
                 "--no-progress", *_short_run(smoke_dataset)]
    command = [sys.executable, "-m", "mmjax.cli", *arguments, "--stop-at", "2"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "step 2 of 4" in done.stdout and "rerun the same command" in done.stdout

    assert main(arguments) == 0
    out = capsys.readouterr().out
    pairs = int(re.search(r"held-out retrieval image-report \((\d+) pairs\)", out).group(1))
    assert 0.8 * SMOKE_EVAL < pairs <= SMOKE_EVAL  # held-out patients with image and report
    assert "chance" in out
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["num_steps"] == 4
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 4]  # the last: evals
    assert (workdir / "checkpoints" / "4").is_dir()


def test_unknown_override_key_fails_with_a_suggestion(tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE_CONFIG), "--workdir", str(tmp_path),
                 "--set", "train.num_step=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.num_step'" in err and "'train.num_steps'" in err
    assert not (tmp_path / "config.json").exists()


def test_missing_config_file_is_named(tmp_path, capsys):
    code = main(["train", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path)])
    assert code == 2
    assert "nope.py" in capsys.readouterr().err


def test_train_without_a_dataset_explains_how_to_make_one(tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE_CONFIG), "--workdir", str(tmp_path)])
    assert code == 2
    assert "mmjax data synthmed" in capsys.readouterr().err


def test_data_synthmed_then_inspect(tmp_path, capsys):
    out = tmp_path / "synthmed"
    assert main(["data", "synthmed", "--patients", "40", "--eval-patients", "8", "--out",
                 str(out), "--image-size", "32", "--frames", "8", "--workers", "1"]) == 0
    assert "train 32, eval 8" in capsys.readouterr().out
    assert main(["data", "inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    for expected in ("train: 32 records", "eval: 8 records", "video", "signal", "audio",
                     "label cardiomegaly", "examples.png"):
        assert expected in printed
    assert (out / "examples.png").stat().st_size > 10_000


def test_plan_prints_parameters_and_flops_per_module(capsys, smoke_dataset):
    assert main(["plan", "--config", str(SMOKE_CONFIG), "--set",
                 f"data.path={smoke_dataset}"]) == 0
    out = capsys.readouterr().out
    for expected in ("encoders_image", "encoders_report", "projections", "total", "MFU"):
        assert expected in out


