"""Eight CPU devices for every test, set before JAX is imported, and a shared compile cache."""

import os
import subprocess
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# gcsfs's experimental bucket-type lookup (gRPC) stalls 60 s against the GCS emulator.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import av  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir", str(REPO / ".cache" / "xla-tests"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


SMOKE_CONFIG = REPO / "experiments" / "smoke_cpu.py"

# Property-based tests: a few dozen fixed cases in the suite; tools/fuzz.py runs the
# "fuzz" profile (MMJAX_FUZZ_EXAMPLES random cases per test, 1000 by default).
_HYPOTHESIS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=30, derandomize=True, **_HYPOTHESIS)
settings.register_profile("fuzz", max_examples=int(os.environ.get("MMJAX_FUZZ_EXAMPLES", 1000)),
                          **_HYPOTHESIS)
settings.load_profile("ci")


# Train and held-out patients of the image-report dataset the training tests share.
SMOKE_TRAIN, SMOKE_EVAL = 4096, 128


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> Path:
    """A SynthMed image-report dataset at 32 px, written once per test session."""
    from mmjax.data.write_synthmed import write_synthmed

    path = tmp_path_factory.mktemp("smoke_dataset")
    write_synthmed(path, SMOKE_TRAIN + SMOKE_EVAL, SMOKE_EVAL, image_size=32,
                   modalities=("image", "report"), vocab_size=512, workers=1, progress=False)
    return path


@pytest.fixture(scope="session")
def all_modalities_dataset(tmp_path_factory) -> Path:
    """A small SynthMed dataset with every modality (32 px images, 8-frame echo, ECG)."""
    from mmjax.data.write_synthmed import write_synthmed

    path = tmp_path_factory.mktemp("all_modalities")
    write_synthmed(path, 576, 64, image_size=32, frames=8, vocab_size=512, workers=1,
                   progress=False)
    return path


def tiny_config(dataset: Path) -> Config:
    """The smoke experiment on `dataset`: trains in seconds on 2 cores and still learns."""
    return config_lib.load(SMOKE_CONFIG, [f"data.path={dataset}"])


def initialised_workdir(cfg: Config, workdir: Path):
    """A workdir holding `cfg`'s model as initialised, checkpointed as step 1 (what export
    reads; skipping the train step's compilation keeps the tests fast). Returns (run, input)."""
    from mmjax.train.checkpoint import Checkpointer
    from mmjax.train.setup import build, open_input, prepare_workdir

    data = open_input(cfg)
    prepare_workdir(cfg, workdir, data.tokenizer)
    run = build(cfg, data.define_model(cfg), data.batches[0], jax.devices()[:1])
    checkpointer = Checkpointer(workdir / "checkpoints", 1, 1)
    checkpointer.maybe_save(run.host_state(), 1, final=True)
    checkpointer.close()
    return run, data


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mmjax(devices: int, *args: str, **env: str) -> subprocess.Popen:
    """`mmjax ARGS` in a new process with `devices` CPU devices, sharing the tests'
    compile cache; stdout and stderr together."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "MMJAX_COMPILATION_CACHE": str(REPO / ".cache" / "xla-tests"), **env}
    return subprocess.Popen([sys.executable, "-m", "mmjax.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def train_smoke(workdir: Path, dataset: Path, *settings: str, **env: str) -> subprocess.Popen:
    """`mmjax train` of the smoke config on 2 devices in a new process, without progress
    bar, TensorBoard or evaluations; `settings` are more --set assignments."""
    settings = (f"data.path={dataset}", "train.tensorboard=false", "eval.evaluators=[]",
                *settings)
    return start_mmjax(2, "train", "--no-progress", "--config", str(SMOKE_CONFIG),
                       "--workdir", str(workdir), *(a for s in settings for a in ("--set", s)),
                       **env)


def logged_steps(workdir: Path) -> int:
    """The newest step in a running job's metrics.jsonl (0 before the first row)."""
    from mmjax.train import metrics as metrics_lib
    try:
        return max((row["step"] for row in metrics_lib.train_rows(workdir / "metrics.jsonl")),
                   default=0)
    except (FileNotFoundError, ValueError):
        return 0  # not written yet, or a row being written


def tree_digest(folder: Path) -> dict:
    """{relative path: sha256} of every file under `folder`: equal digests, untouched files."""
    import hashlib
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {jax.device_count()}"


def write_av(path, channels=None, codec: str = "aac", rate: int = 16000,
             video_frames: int = 0, frame_value: int = 0) -> Path:
    """A media file written with PyAV: `channels` (float [C, N] in [-1, 1]) encoded with
    `codec` (PyAV converts the sample format and cuts frames to the encoder's size) and
    `video_frames` 48x32 frames at 10 fps of grey level `frame_value`."""
    with av.open(str(path), "w") as container:
        packets = []  # streams are all added before the first packet writes the header
        if video_frames:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
            grey = av.VideoFrame.from_ndarray(np.full((32, 48, 3), frame_value, np.uint8),
                                              format="rgb24")
            packets += [packet for _ in range(video_frames) for packet in stream.encode(grey)]
            packets += stream.encode()
        if channels is not None:
            layout = ("mono", "stereo")[len(channels) - 1]
            stream = container.add_stream(codec, rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(
                np.asarray(channels, np.float32), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, 0
            packets += stream.encode(frame) + stream.encode()
        container.mux(packets)
    return Path(path)
