"""The `mmjax` command, run as a user runs it."""

import json
import subprocess
import sys

from conftest import REPO, SMOKE_CONFIG

from mmjax.cli import main

SHORT_RUN = ["--set", "train.num_steps=4", "--set", "train.log_every=2",
             "--set", "data.num_train=256", "--set", "data.num_eval=64"]


def test_train_end_to_end_stopped_and_resumed(tmp_path, capsys):
    workdir = tmp_path / "run"
    arguments = ["train", "--config", str(SMOKE_CONFIG), "--workdir", str(workdir),
                 "--no-progress", *SHORT_RUN]
    command = [sys.executable, "-m", "mmjax.cli", *arguments, "--stop-at", "2"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "step 2 of 4" in done.stdout and "rerun the same command" in done.stdout

    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "held-out retrieval (64 pairs)" in out and "chance" in out
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["num_steps"] == 4
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]
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
