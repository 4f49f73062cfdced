"""Datasets and workdirs in a bucket, against a GCS emulator on loopback: the same records
as on disk, and a run trained, stopped, resumed, evaluated and exported through gs://
URLs (orbax/tensorstore for checkpoints, array_record's GCS reader for shards, gcsfs for
the rest)."""

import json
import subprocess
import sys
import time

import gcsfs
import numpy as np
import pytest
from conftest import REPO, SMOKE_CONFIG, free_port, start_mmjax

from mmjax import storage
from mmjax.config import ConfigError, DataConfig
from mmjax.data import pipeline
from mmjax.data.shards import ShardedSource
from mmjax.export import export

BUCKET = "mmjax-test"


@pytest.fixture(scope="module")
def gcs(smoke_dataset):
    """(environment pointing every GCS client at the emulator, gcsfs of it); the smoke
    dataset uploaded to gs://mmjax-test/data."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "gcs_emulator.py"), "start",
                               "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                               "--default-bucket", BUCKET, "--quiet"])
    url = f"http://127.0.0.1:{port}"
    env = {"STORAGE_EMULATOR_HOST": url,  # gcsfs (etils.epath) and google-cloud-storage
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no gRPC bucket-type lookup
           "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's array data
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "none",
           "CLOUD_STORAGE_EMULATOR_ENDPOINT": url}  # array_record's reader
    fs = gcsfs.GCSFileSystem(endpoint_url=url, token="anon")
    deadline = time.time() + 30
    while True:
        try:
            fs.ls(BUCKET)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.time() < deadline and server.poll() is None, "the emulator did not start"
            time.sleep(0.2)
    fs.put(str(smoke_dataset), f"{BUCKET}/data", recursive=True)
    yield env, fs
    server.terminate()
    server.wait(timeout=30)


def test_a_dataset_in_a_bucket_reads_as_on_disk(gcs, smoke_dataset, monkeypatch):
    env, _ = gcs
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    remote = ShardedSource(f"gs://{BUCKET}/data", "eval")  # checksums verified over HTTP
    local = ShardedSource(smoke_dataset, "eval")
    assert remote.manifest == local.manifest and len(remote) == len(local) == 128
    for i in (0, 63, 127):
        a, b = remote[i], local[i]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    cfg = DataConfig(path=f"gs://{BUCKET}/data")
    assert pipeline.load_tokenizer(cfg).encode("no acute findings").ids == \
        pipeline.load_tokenizer(DataConfig(path=str(smoke_dataset))) \
        .encode("no acute findings").ids


def test_train_resume_evaluate_and_export_through_gs_urls(gcs, tmp_path):
    env, fs = gcs
    workdir, data = f"gs://{BUCKET}/run", f"gs://{BUCKET}/data"
    settings = [f"data.path={data}", "train.num_steps=8", "train.log_every=2",
                "train.checkpoint_every=4", "train.batch_size=32",
                "eval.evaluators=(retrieval,)", "eval.batch_size=64"]
    train = ["train", "--no-progress", "--config", str(SMOKE_CONFIG), "--workdir", workdir,
             *(a for s in settings for a in ("--set", s))]
    for extra in (["--stop-at", "4"], []):
        process = start_mmjax(8, *train, *extra, **env)
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output[-3000:]
    assert "resumed from step 4" in output

    rows = [json.loads(line) for line in fs.cat(f"{BUCKET}/run/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]  # none lost, none twice
    assert any("eval/retrieval/image-report/image_to_report/R@1" in r for r in rows)
    names = {p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/run")}
    assert {"config.json", "retrieval.json", "retrieval_examples_image.npz",
            "commit_success.txt"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)  # TensorBoard
    assert sorted(int(p.rsplit("/", 1)[-1]) for p in fs.ls(f"{BUCKET}/run/checkpoints")) \
        == [4, 8]

    process = start_mmjax(8, "export", "--workdir", workdir, "--out", str(tmp_path / "x"),
                          **env)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    assert (tmp_path / "x" / "export.json").is_file()


def test_other_urls_and_bucket_outputs_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="data.path https://x/y: only local paths"):
        storage.path("https://x/y", "data.path")
    assert str(storage.path("gs://b/x/y")) == "gs://b/x/y"  # not pathlib's gs:/b/x/y
    with pytest.raises(ConfigError, match="exports are written to a local folder"):
        export(tmp_path, "gs://b/export")
