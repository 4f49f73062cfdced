"""Eight CPU devices for every test, set before JAX is imported, and a shared compile cache."""

import os
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir", str(REPO / ".cache" / "xla-tests"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


SMOKE_CONFIG = REPO / "experiments" / "smoke_cpu.py"


def tiny_config() -> Config:
    """The smoke experiment: trains in seconds on 2 cores and still learns retrieval."""
    return config_lib.load(SMOKE_CONFIG)


@pytest.fixture
def tiny():
    return tiny_config()


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {jax.device_count()}"
