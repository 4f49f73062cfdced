"""Several processes on one machine over loopback: two processes with 2 CPU devices each
train with the mesh strategy and per-host input, checkpoint and stop; one process with 4
devices restores that checkpoint onto its own mesh and continues. Every logged loss equals
an uninterrupted 4-device run's: per-host batches are rows of the same global batches
whatever the number of hosts, and the checkpoint is resharded on restore."""

import json
import subprocess

import numpy as np
import pytest
from conftest import SMOKE_CONFIG, free_port, start_mmjax

STEPS, STOP = 6, 3
SETTINGS = [f"train.num_steps={STEPS}", "train.log_every=1", f"train.checkpoint_every={STOP}",
            "train.batch_size=16", "eval.batch_size=16", "eval.evaluators=(retrieval,)",
            "train.tensorboard=false"]


def _train(dataset, workdir, devices: int, *extra: str) -> subprocess.Popen:
    overrides = [arg for s in [f"data.path={dataset}", *SETTINGS] for arg in ("--set", s)]
    return start_mmjax(devices, "train", "--config", str(SMOKE_CONFIG), "--workdir", str(workdir),
                  "--no-progress", *overrides, *extra)


def _join(i: int, coordinator: str) -> tuple[str, ...]:
    return ("--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i))


def _finish(process: subprocess.Popen, timeout: int = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def _losses(workdir) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def test_two_processes_then_one_with_a_resharded_checkpoint(tmp_path, smoke_dataset):
    coordinator = f"127.0.0.1:{free_port()}"
    workers = [_train(smoke_dataset, tmp_path / "run", 2, "--stop-at", str(STOP),
                      *_join(i, coordinator)) for i in range(2)]
    outputs = [_finish(w) for w in workers]
    for i, out in enumerate(outputs):
        assert f"process {i} of 2: 2 local devices of 4" in out
    assert "stopped early with a checkpoint" in outputs[0]
    assert len(_losses(tmp_path / "run")) == STOP  # process 0 alone wrote the log
    assert (tmp_path / "run" / "checkpoints" / str(STOP)).is_dir()

    resumed = _train(smoke_dataset, tmp_path / "run", 4)
    reference = _train(smoke_dataset, tmp_path / "reference", 4)
    assert "resumed from step 3" in _finish(resumed)
    _finish(reference)
    np.testing.assert_allclose(_losses(tmp_path / "run"), _losses(tmp_path / "reference"),
                               rtol=1e-5)
    assert len(_losses(tmp_path / "reference")) == STEPS

    # Two processes evaluate the trained run as one did: each example once, gathered.
    retrieval = tmp_path / "run" / "eval" / "retrieval.json"
    single = json.loads(retrieval.read_text())
    coordinator = f"127.0.0.1:{free_port()}"
    for evaluator in [start_mmjax(2, "eval", "--workdir", str(tmp_path / "run"),
                             *_join(i, coordinator)) for i in range(2)]:
        _finish(evaluator)
    assert json.loads(retrieval.read_text()) == single


def test_joining_needs_all_three_settings_and_detects_clusters():
    from mmjax.config import ConfigError
    from mmjax.parallel import distributed

    assert distributed.initialize(env={}) is False  # one process: nothing to join
    with pytest.raises(ConfigError, match=r"--num-processes \(MMJAX_NUM_PROCESSES\)"):
        distributed.initialize(env={"MMJAX_COORDINATOR": "10.0.0.1:1234",
                                    "MMJAX_PROCESS_ID": "0"})
    with pytest.raises(ConfigError, match="MMJAX_NUM_PROCESSES='two'"):
        distributed.initialize(env={"MMJAX_NUM_PROCESSES": "two"})
    with pytest.raises(ConfigError, match="--process-id 2 is not in 0..1"):
        distributed.initialize("10.0.0.1:1234", 2, 2, env={})
    assert distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == "slurm"
    assert distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert distributed.cluster_detected({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}) == "tpu"
    assert distributed.cluster_detected({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
