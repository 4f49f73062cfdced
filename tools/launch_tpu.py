"""Runs `mmjax train` on a Cloud TPU VM slice: create the slice (directly, or as a queued
resource that waits for capacity), install this checkout on every worker, train with
`--worker=all` (every worker runs the same command and jax.distributed finds its peers),
stream the logs, then delete the slice.

  python tools/launch_tpu.py --name clip-b16 --zone us-central2-b --accelerator v4-32 \\
      --config experiments/synthmed_pretrain.py --workdir /gcs/BUCKET/runs/clip-b16 \\
      [--set train.num_steps=1000] [--queued] [--spot] [--keep] [--dry-run]

--dry-run prints every command and runs none. The workdir and data must be on storage
every worker reads and writes: a bucket mounted at the same path on each (gcsfuse; mmjax
refuses gs:// URLs rather than mangle them) or a Filestore share.
"""

import argparse
import shlex
import subprocess
import sys
import time

ACCELERATOR_PREFIXES = ("v2-", "v3-", "v4-", "v5litepod-", "v5p-", "v6e-")
RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
           "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e", "v2": "tpu-ubuntu2204-base",
           "v3": "tpu-ubuntu2204-base"}
ARCHIVE = "mmjax.tar.gz"
POLL_S = 60


def runtime_version(accelerator: str) -> str:
    if not accelerator.startswith(ACCELERATOR_PREFIXES):
        raise ValueError(f"--accelerator {accelerator!r} is not a TPU type like v4-32, "
                         f"v5p-64 or v6e-16 (prefixes {', '.join(ACCELERATOR_PREFIXES)})")
    return RUNTIME[accelerator.split("-")[0]]


def commands(args) -> dict[str, list[str]]:
    """Every gcloud (and git) command of a launch, by stage, as argument lists."""
    where = ["--zone", args.zone, *(["--project", args.project] if args.project else [])]
    version = args.version or runtime_version(args.accelerator)
    spot = ["--spot"] if args.spot else []
    if args.queued:
        create = ["gcloud", "compute", "tpus", "queued-resources", "create", args.name,
                  "--node-id", args.name, "--accelerator-type", args.accelerator,
                  "--runtime-version", version, *spot, *where]
        delete = ["gcloud", "compute", "tpus", "queued-resources", "delete", args.name,
                  "--force", "--quiet", *where]
    else:
        create = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name,
                  "--accelerator-type", args.accelerator, "--version", version, *spot, *where]
        delete = ["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, "--quiet",
                  *where]
    on_all = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, "--worker=all", *where,
              "--command"]
    overrides = [arg for override in args.overrides for arg in ("--set", override)]
    train = ["mmjax", "train", "--config", args.config, "--workdir", args.workdir,
             "--no-progress", *overrides]
    return {
        "archive": ["git", "archive", "--format=tar.gz", "--prefix=mmjax/", "-o", ARCHIVE,
                    "HEAD"],
        "create": create,
        "wait": ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name,
                 "--format=value(state.state)", *where] if args.queued else [],
        "copy": ["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{args.name}:~/",
                 "--worker=all", *where],
        "install": [*on_all, f"rm -rf mmjax && tar xzf {ARCHIVE} && "
                    "pip install -q 'jax[tpu]' ./mmjax"],
        "train": [*on_all, f"cd mmjax && {shlex.join(train)}"],
        "delete": delete,
    }


def _run(command: list[str], dry_run: bool) -> str:
    print("+", shlex.join(command), flush=True)
    if dry_run:
        return ""
    return subprocess.run(command, check=True, stdout=subprocess.PIPE if "describe" in command
                          else None, text=True).stdout or ""


def launch(args) -> int:
    stages = commands(args)
    _run(stages["archive"], args.dry_run)
    _run(stages["create"], args.dry_run)
    try:
        while stages["wait"] and not args.dry_run:
            state = _run(stages["wait"], False).strip()
            if state == "ACTIVE":
                break
            if state in ("FAILED", "SUSPENDED"):
                raise RuntimeError(f"queued resource {args.name} is {state}")
            time.sleep(POLL_S)
        if args.dry_run and stages["wait"]:
            print("+", shlex.join(stages["wait"]), "# until ACTIVE")
        for stage in ("copy", "install", "train"):
            _run(stages[stage], args.dry_run)
    finally:
        if not args.keep:
            _run(stages["delete"], args.dry_run)
    return 0


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default="")
    parser.add_argument("--accelerator", required=True, help="e.g. v4-32, v5p-64, v6e-16")
    parser.add_argument("--version", default="", help="TPU runtime (default: by generation)")
    parser.add_argument("--config", required=True, help="experiment file, relative to the repo")
    parser.add_argument("--workdir", required=True,
                        help="a path every worker shares (a mounted bucket, Filestore)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--queued", action="store_true",
                        help="a queued resource: waits for capacity instead of failing")
    parser.add_argument("--spot", action="store_true", help="preemptible capacity")
    parser.add_argument("--keep", action="store_true", help="do not delete the slice")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    runtime_version(args.accelerator)  # a bad type fails before anything is created
    return args


if __name__ == "__main__":
    try:
        sys.exit(launch(parse()))
    except ValueError as e:
        print(f"launch_tpu: error: {e}", file=sys.stderr)
        sys.exit(2)
