"""The `mmjax` command line."""

import argparse
import logging
import os
import sys
from pathlib import Path

from mmjax.config import ConfigError

COMPILATION_CACHE = os.environ.get(
    "MMJAX_COMPILATION_CACHE", str(Path("~/.cache/mmjax/xla").expanduser())
)


def _enable_compilation_cache() -> None:
    """Reuses compiled steps across runs: compiling dominates short CPU runs."""
    import jax

    jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _train(args: argparse.Namespace) -> int:
    from mmjax import config as config_lib
    from mmjax.eval.retrieval import format_table
    from mmjax.train.loop import train

    cfg = config_lib.load(args.config, args.overrides)
    _enable_compilation_cache()
    result = train(cfg, args.workdir, progress=not args.no_progress, stop_at=args.stop_at)
    print(f"step {result['step']} of {cfg.train.num_steps}: workdir {args.workdir}")
    if result["retrieval"] is None:
        print("stopped early with a checkpoint; rerun the same command to continue")
    else:
        print(format_table(result["retrieval"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="pretrain (or resume) and evaluate retrieval")
    train.add_argument("--config", required=True, help="experiment file defining get_config()")
    train.add_argument("--workdir", required=True, help="checkpoints, logs and evals go here")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.num_steps=100 (repeatable)",
    )
    train.add_argument(
        "--stop-at", type=int, metavar="STEP",
        help="checkpoint after STEP and exit; rerunning continues from there",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(run=_train)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"mmjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
