"""The `mmjax` command line."""

import argparse
import logging
import os
import sys
from pathlib import Path

from mmjax import __version__
from mmjax.config import ConfigError
from mmjax.data.formats import SOURCE_FORMATS
from mmjax.data.shards import DatasetError
from mmjax.train.failures import CheckpointWriteError, TrainingDiverged

SIGINT_STATUS = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)
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
    from mmjax.eval.summary import format_results
    from mmjax.train.loop import train

    cfg = config_lib.load(args.config, args.overrides)
    _join(args)
    _enable_compilation_cache()
    result = train(cfg, args.workdir, progress=not args.no_progress, stop_at=args.stop_at)
    print(f"step {result['step']} of {cfg.train.num_steps}: workdir {args.workdir}")
    if result["step"] < cfg.train.num_steps:
        print(_stopped(result) if result["signal"] else
              "stopped early with a checkpoint; rerun the same command to continue")
        return SIGINT_STATUS if result["signal"] == "SIGINT" else 0
    if result["evals"]:
        print(format_results(result["evals"]))
    return 0


def _stopped(result: dict) -> str:
    """One line on a run a signal stopped: the checkpoint it saved, or that it saved none
    (a step in a NaN/Inf streak is never saved) and which one a rerun resumes from."""
    step, saved = result["step"], result["saved_step"]
    kept = (f"saved a checkpoint at step {step}" if saved == step else
            f"step {step} was not saved (NaN/Inf steps); the newest checkpoint is "
            + (f"step {saved}" if saved else "none"))
    if result["signal"] == "SIGINT":
        return f"interrupted: {kept}; rerun the same command to resume"
    return f"{result['signal']}: {kept}; rerun the same command to continue"


def _eval(args: argparse.Namespace) -> int:
    from mmjax import trained
    from mmjax.eval import registry
    from mmjax.eval.summary import format_results

    _join(args)
    _enable_compilation_cache()
    ctx = trained.load(args.workdir, args.step, args.data, eval_overrides=args.overrides)
    names = args.evals.split(",") if args.evals else None
    results = registry.run_all(ctx, registry.resolve(ctx.cfg, names))
    print(f"step {ctx.step} of {args.workdir} on {ctx.cfg.data.path}:")
    print(format_results(results))
    if ctx.out_dir is not None:
        print(f"wrote {ctx.out_dir}/<evaluator>.json")
    return 0


def _join(args: argparse.Namespace) -> None:
    """Joins a multi-process job when the flags, MMJAX_* variables or the cluster say so."""
    from mmjax.parallel import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _add_distributed_flags(parser) -> None:
    group = parser.add_argument_group(
        "multi-process (automatic on TPU pod slices and SLURM; else all three, or the "
        "MMJAX_COORDINATOR, MMJAX_NUM_PROCESSES, MMJAX_PROCESS_ID variables)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="process 0's address, reachable from every process")
    group.add_argument("--num-processes", type=int, help="processes in the job")
    group.add_argument("--process-id", type=int, help="this process, 0..N-1")


def _report(args: argparse.Namespace) -> int:
    from mmjax.report import write_report

    path = write_report([Path(w) for w in args.workdir], Path(args.out) if args.out else None)
    print(f"report: {path.resolve()}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format != "mmjax":
        from mmjax.interop import outbound

        out = outbound.export(args.workdir, args.out, args.step, args.format)
        loader = {"hf": "transformers.AutoModel.from_pretrained(folder)",
                  "open_clip": "open_clip.model.CLIP(**model_cfg) + load_state_dict"}
        print(f"exported {args.workdir} to {out} (load with {loader[args.format]})")
        return 0
    from mmjax.export import export

    _enable_compilation_cache()
    out = export(args.workdir, args.out, args.step, args.data or None)
    print(f"exported {args.workdir} to {out} (load with mmjax.export.load)")
    return 0


def _data_synthmed(args: argparse.Namespace) -> int:
    from mmjax.data.write_synthmed import write_synthmed

    manifest = write_synthmed(
        args.out, args.patients, args.eval_patients or max(args.patients // 10, 1),
        seed=args.seed, image_size=args.image_size, frames=args.frames,
        signal_rate_hz=args.signal_rate, modalities=tuple(args.modalities.split(",")),
        vocab_size=args.vocab_size, workers=args.workers,
    )
    counts = ", ".join(f"{s} {manifest.num_records(s)}" for s in manifest.splits)
    print(f"wrote {args.out}: {counts}")
    return 0


def _data_ingest(args: argparse.Namespace) -> int:
    from mmjax.data.ingest import Shapes, ingest

    shapes = Shapes(args.image_size, args.channels, args.frames, args.signal_rate,
                    args.signal_seconds, args.audio_rate, args.audio_seconds)
    report = ingest(args.src, args.out, args.format, shapes, args.eval_fraction,
                    args.max_errors, args.vocab_size)
    print(f"wrote {args.out}: {report['records']} records from {report['files']} files "
          f"({', '.join(f'{k} {v}' for k, v in report['splits'].items())}); "
          f"{len(report['errors'])} errors, {len(report['skipped'])} skipped")
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from mmjax.data.inspect import format_summary, plot_examples, summarize

    print(format_summary(summarize(args.dir)))
    grid = plot_examples(args.dir, Path(args.dir) / "examples.png", args.split)
    print(f"example grid: {grid}")
    return 0


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="write, ingest and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser("synthmed", help="write a SynthMed corpus as shards")
    synth.add_argument("--patients", type=int, required=True)
    synth.add_argument("--out", required=True, help="dataset folder to create")
    synth.add_argument("--eval-patients", type=int, default=0,
                       help="held-out patients (default: a tenth)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--frames", type=int, default=16, help="echo clip frames")
    synth.add_argument("--signal-rate", type=int, default=100, help="ECG samples per second")
    synth.add_argument("--modalities", default="image,video,signal,audio,report",
                       help="comma-separated subset of image,video,signal,audio,report")
    synth.add_argument("--vocab-size", type=int, default=1024, help="tokenizer size")
    synth.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    synth.set_defaults(run=_data_synthmed)

    ingest = data_commands.add_parser("ingest", help="raw files -> a sharded dataset")
    ingest.add_argument("--src", required=True,
                        help="a CSV/JSONL manifest, or a folder of DICOM, video, ECG or "
                        "audio files")
    ingest.add_argument("--out", required=True, help="dataset folder to create")
    ingest.add_argument("--format", default="auto", choices=SOURCE_FORMATS)
    ingest.add_argument("--image-size", type=int, default=64)
    ingest.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ingest.add_argument("--frames", type=int, default=16)
    ingest.add_argument("--signal-rate", type=int, default=100, help="target ECG rate (Hz)")
    ingest.add_argument("--signal-seconds", type=float, default=10.0)
    ingest.add_argument("--audio-rate", type=int, default=2000,
                        help="target audio rate (Hz) of audio files and videos' audio tracks")
    ingest.add_argument("--audio-seconds", type=float, default=5.0)
    ingest.add_argument("--eval-fraction", type=float, default=0.1,
                        help="patients held out, chosen by a hash of the patient id")
    ingest.add_argument("--max-errors", type=float, default=0.05,
                        help="fail when a larger fraction of files cannot be read")
    ingest.add_argument("--vocab-size", type=int, default=1024, help="tokenizer size")
    ingest.set_defaults(run=_data_ingest)

    inspect = data_commands.add_parser("inspect", help="counts, missing rates, example grid")
    inspect.add_argument("dir", help="dataset folder")
    inspect.add_argument("--split", default="train", help="split to draw examples from")
    inspect.set_defaults(run=_data_inspect)


def _plan(args: argparse.Namespace) -> int:
    import jax

    from mmjax import config as config_lib
    from mmjax.plan import (
        activation_memory,
        format_memory,
        format_plan,
        format_shapes,
        has_dataset,
        input_shapes,
        plan,
        shape_overrides,
        weight_memory,
    )

    cfg = config_lib.load(args.config, args.overrides)
    # Without --shape, a data.path that holds no dataset is an error, not 64 px guesses.
    shapes = input_shapes(cfg, shape_overrides(args.shapes) if args.shapes else None)
    if not has_dataset(cfg.data.path):
        print(f"assumed input shapes ({'--shape' if args.shapes else 'no data.path'}): "
              f"{format_shapes(shapes)}\n")
    print(format_plan(plan(cfg, shapes)))
    devices = args.devices or jax.device_count()
    print(format_memory(weight_memory(cfg, shapes, devices),
                        activation_memory(cfg, shapes, devices)))
    return 0


def _add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train (or resume), then run the evaluators")
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
    _add_distributed_flags(train)
    train.set_defaults(run=_train)


def _add_eval_command(commands) -> None:
    evaluate = commands.add_parser("eval", help="run evaluators on a trained workdir")
    evaluate.add_argument("--workdir", required=True, help="a training workdir")
    evaluate.add_argument("--evals", default="",
                          help="comma-separated evaluators (default: the config's eval.evaluators)")
    evaluate.add_argument("--data", default="",
                          help="evaluate on this dataset's eval split instead of the config's")
    evaluate.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="eval.KEY=VALUE", help="change an eval setting (repeatable)")
    _add_distributed_flags(evaluate)
    evaluate.set_defaults(run=_eval)


def _add_export_command(commands) -> None:
    export = commands.add_parser("export", help="encoders as StableHLO + safetensors")
    export.add_argument("--workdir", required=True, help="a training workdir")
    export.add_argument("--out", required=True, help="folder to write (a new one, or a "
                        "previous export to replace)")
    export.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    export.add_argument("--data", default="",
                        help="an imported model's workdir: the dataset whose shapes to export at")
    export.add_argument("--format", choices=("mmjax", "hf", "open_clip"), default="mmjax",
                        help="mmjax: StableHLO + safetensors for mmjax.export.load; hf: a "
                             "Hugging Face CLIPModel folder; open_clip: a state dict and "
                             "its model config (CLIP-shaped models)")
    export.set_defaults(run=_export)


def _add_import_command(commands) -> None:
    imports = commands.add_parser(
        "import", help="a pretrained CLIP, SigLIP or BiomedCLIP checkpoint as a workdir")
    imports.add_argument("--from", dest="source", required=True,
                         choices=("hf", "open_clip", "big_vision"),
                         help="hf: a CLIPModel or SiglipModel folder; open_clip: a state dict "
                              "(.safetensors) with --config; big_vision: a SigLIP .npz")
    imports.add_argument("path", help="the folder (hf) or the weights file (open_clip, "
                                      "big_vision)")
    imports.add_argument("--config", help="open_clip: the model config JSON "
                                          "(open_clip_config.json or model_configs/*.json)")
    imports.add_argument("--tokenizer", help="a tokenizer.json, BERT vocab.txt or SigLIP "
                                             "spiece.model (hf: default the folder's "
                                             "tokenizer.json, else its spiece.model)")
    imports.add_argument("--image-size", type=int,
                         help="run the image tower at this size: its position embeddings "
                              "resampled as the source library does (default: as trained)")
    imports.add_argument("--workdir", required=True, help="a new folder to write")
    imports.set_defaults(run=_import)


def _import(args: argparse.Namespace) -> int:
    from mmjax.interop import workdir

    source = workdir.read_source(args.source, args.path, args.config, args.tokenizer,
                                 args.image_size)
    out = workdir.write(source, args.workdir)
    model = source.imported.model
    print(f"imported {args.path} ({source.family}: image {model.image.width}x"
          f"{model.image.depth}, text {model.text.width}x{model.text.depth}, embed "
          f"{model.embed_dim}) to {out}; evaluate with `mmjax eval --workdir {out} --data "
          "DATASET`")
    return 0


def _add_report_command(commands) -> None:
    report = commands.add_parser("report", help="an HTML page of curves, metrics, examples")
    report.add_argument("--workdir", action="append", required=True,
                        help="a training workdir (repeat for several runs on one page)")
    report.add_argument("--out", default="",
                        help="HTML file (default: <first workdir>/report.html)")
    report.set_defaults(run=_report)


def _add_plan_command(commands) -> None:
    plan = commands.add_parser("plan", help="parameters and training FLOPs per module")
    plan.add_argument("--config", required=True, help="experiment file defining get_config()")
    plan.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override a config field (repeatable)")
    plan.add_argument("--shape", dest="shapes", action="append", default=[],
                      metavar="KEY=VALUE", help="an input size when data.path has no dataset: "
                      "image_size, channels, frames, signal_samples, audio_samples, "
                      "audio_rate_hz, text_len, vocab_size, num_labels (repeatable)")
    plan.add_argument("--devices", type=int, default=0,
                      help="devices the mesh spans (default: those of this machine)")
    plan.set_defaults(run=_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmjax", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmjax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_train_command(commands)
    _add_eval_command(commands)
    _add_export_command(commands)
    _add_import_command(commands)
    _add_report_command(commands)
    _add_plan_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (ConfigError, DatasetError, TrainingDiverged, CheckpointWriteError,
            FileNotFoundError) as e:
        print(f"mmjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the train loop, or a second one while saving
        print("mmjax: interrupted", file=sys.stderr)
        return SIGINT_STATUS


if __name__ == "__main__":
    sys.exit(main())
