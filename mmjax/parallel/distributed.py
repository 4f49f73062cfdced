"""Joining a multi-process JAX job: one process per host (TPU VM worker, SLURM task, GPU
node), all running the same program on their own devices and per-host data.

`initialize` takes the coordinator, process count and process id from its arguments (the
CLI's --coordinator/--num-processes/--process-id), else from MMJAX_COORDINATOR,
MMJAX_NUM_PROCESSES and MMJAX_PROCESS_ID, else lets jax.distributed detect a TPU pod slice
or a SLURM job with several tasks; with none of these it is one process and does nothing.
It must run before anything touches a device.
"""

import logging
import os

import jax

from mmjax.config import ConfigError

log = logging.getLogger(__name__)

ENV = {"coordinator": "MMJAX_COORDINATOR", "num_processes": "MMJAX_NUM_PROCESSES",
       "process_id": "MMJAX_PROCESS_ID"}
# A peer that has not joined is an error after this long, not a hang.
TIMEOUT_S = 300
# A peer that stops answering (killed, its host lost) ends every other process after this
# long: jax's coordination service stops the job instead of leaving it waiting in a
# collective. MMJAX_HEARTBEAT_TIMEOUT overrides it.
HEARTBEAT_ENV, HEARTBEAT_S = "MMJAX_HEARTBEAT_TIMEOUT", 100


def _from_env(env, name: str, cast):
    value = env.get(ENV[name], "")
    if not value:
        return None
    try:
        return cast(value)
    except ValueError:
        raise ConfigError(f"{ENV[name]}={value!r} is not a valid {name}") from None


def _heartbeat_s(env) -> int:
    value = env.get(HEARTBEAT_ENV, "") or str(HEARTBEAT_S)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{HEARTBEAT_ENV}={value!r} is not a whole number of seconds")
    return int(value)


def cluster_detected(env=os.environ) -> str | None:
    """'slurm' or 'tpu' when this process is one of several that jax can find by itself."""
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, env=os.environ,
               timeout_s: int = TIMEOUT_S) -> bool:
    """Joins the job; True when this is one process of several."""
    coordinator = coordinator or _from_env(env, "coordinator", str)
    num_processes = num_processes if num_processes is not None else _from_env(
        env, "num_processes", int)
    process_id = process_id if process_id is not None else _from_env(env, "process_id", int)
    explicit = {"coordinator": coordinator, "num_processes": num_processes,
                "process_id": process_id}
    if any(v is not None for v in explicit.values()):
        missing = [f"--{k.replace('_', '-')} ({ENV[k]})" for k, v in explicit.items()
                   if v is None]
        if missing:
            raise ConfigError(f"a multi-process run needs {', '.join(missing)} as well")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in 0..{num_processes - 1}")
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=_heartbeat_s(env))
    elif (cluster := cluster_detected(env)) is not None:
        log.info("joining the %s job jax detects", cluster)
        jax.distributed.initialize(initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=_heartbeat_s(env))
    else:
        return False
    log.info("process %d of %d: %d local devices of %d", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True
