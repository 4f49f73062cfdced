"""The cluster launchers' dry runs: every command a TPU or SLURM launch would run."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

TPU = [sys.executable, str(REPO / "tools" / "launch_tpu.py"), "--dry-run", "--name", "clip",
       "--zone", "us-central2-b", "--accelerator", "v4-32", "--config",
       "experiments/smoke_cpu.py", "--workdir", "/gcs/bucket/runs/clip",
       "--set", "train.num_steps=10",
       "--set", "eval.zeroshot.normal_prompts=Normal chest, no change"]


def _commands(argv, **env) -> list[list[str]]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, **env}).stdout
    return [shlex.split(line[2:].split(" # ")[0]) for line in out.splitlines()
            if line.startswith("+ ")]


def test_tpu_launch_creates_installs_trains_on_every_worker_and_deletes():
    commands = _commands(TPU)
    stages = [c[:5] for c in commands]
    assert stages[0][:2] == ["git", "archive"]
    create, *middle, delete = commands[1:]
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--accelerator-type" in create and create[create.index("--accelerator-type") + 1] \
        == "v4-32" and create[create.index("--version") + 1] == "tpu-ubuntu2204-base"
    copy, install, train = middle
    assert "--worker=all" in copy and all("--worker=all" in c for c in (install, train))
    assert "pip install" in install[-1] and "jax[tpu]" in install[-1]
    remote = shlex.split(train[-1].split("&& ", 1)[1])
    assert remote[:6] == ["mmjax", "train", "--config", "experiments/smoke_cpu.py",
                          "--workdir", "/gcs/bucket/runs/clip"]
    assert remote[-2:] == ["--set", "eval.zeroshot.normal_prompts=Normal chest, no change"]
    assert delete[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"]


def test_queued_spot_launch_waits_for_capacity_and_keep_skips_the_delete():
    commands = _commands([*TPU, "--queued", "--spot", "--keep", "--accelerator", "v5p-64"])
    create = commands[1]
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert "--spot" in create and create[create.index("--runtime-version") + 1] == \
        "v2-alpha-tpuv5"
    assert commands[2][4] == "describe"  # polled until ACTIVE
    assert not any("delete" in c for c in commands)


def test_a_bad_accelerator_is_refused_before_anything_runs():
    result = subprocess.run([*TPU, "--accelerator", "a100-8"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 2 and "not a TPU type" in result.stderr
    assert "+ " not in result.stdout


def test_slurm_script_runs_one_task_per_node_with_the_arguments_intact():
    script = REPO / "tools" / "launch_slurm.sh"
    (command,) = [shlex.split(line) for line in subprocess.run(
        ["bash", str(script), "experiments/smoke_cpu.py", "/shared/runs/x", "--set",
         "eval.zeroshot.normal_prompts=Normal chest, no change"], capture_output=True, text=True,
        check=True, env={**os.environ, "DRY_RUN": "1"}).stdout.splitlines()]
    assert command[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1", "mmjax"]
    assert command[4:9] == ["train", "--config", "experiments/smoke_cpu.py", "--workdir",
                            "/shared/runs/x"]
    assert command[-1] == "eval.zeroshot.normal_prompts=Normal chest, no change"
    header = script.read_text()
    assert "#SBATCH --ntasks-per-node=1" in header and "#SBATCH --signal=TERM@120" in header
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["bash", str(script)], check=True, capture_output=True)
