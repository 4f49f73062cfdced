"""The `eval` section: which evaluators run (mmjax/eval/registry.py), and one section of
options and schedule per evaluator kind.

`eval.evaluators` names runs as `kind` or `kind@split`: ("retrieval", "retrieval@train")
runs retrieval on the held-out split and on the training split, with results under each
name (eval/retrieval.json, eval/retrieval@train.json). Both read `eval.retrieval`.
"""

from __future__ import annotations

import dataclasses

from mmjax.config.base import Section, section


@dataclasses.dataclass
class EvaluatorSection(Section):
    """What every evaluator has: its schedule and the split it reads."""

    every: int = 0  # also run every N training steps (0: only after the last step)
    split: str = ""  # '' = data.eval_split; a `kind@split` name overrides it


@dataclasses.dataclass
class AucSection(EvaluatorSection):
    findings: tuple[str, ...] = ()  # labels the mean AUC is over ((): every label)


@dataclasses.dataclass
class RetrievalEval(EvaluatorSection):
    recall_at: tuple[int, ...] = (1, 5, 10)
    examples: int = 8  # queries kept with their top reports for the run report


@dataclasses.dataclass
class ZeroshotEval(AucSection):
    prompts: str = ""  # JSON {finding: {"positive": [...], "negative": [...]}}; "" = built in
    normal_prompts: tuple[str, ...] = ()  # a normal study, added to built-in negatives


@dataclasses.dataclass
class ProbeEval(AucSection):
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # of the training labels
    train_examples: int = 4096  # data.train_split examples embedded for the probe (0: all)
    l2: float = 1e-3


@dataclasses.dataclass
class DiagnosisEval(AucSection):
    pass


@dataclasses.dataclass
class GenerationEval(EvaluatorSection):
    # findings the F1 is over ((): every label the extractor knows); a radiograph cannot
    # state the ECG's or echo's findings that a report's clinical history mentions
    findings: tuple[str, ...] = ()
    limit: int = 128  # reports generated (0: the whole split); decoding is slow on CPU
    max_len: int = 0  # tokens (0: data.max_text_len)
    beam_size: int = 4
    length_penalty: float = 0.0  # beams ranked by log-likelihood / length ** this
    examples: int = 8  # generated reports kept for the run report


@dataclasses.dataclass
class ReconstructionEval(EvaluatorSection):
    examples: int = 8  # images kept for the run report's grid


@dataclasses.dataclass
class EvalConfig(Section):
    """Held-out evaluation: the evaluator runs, the batch they share, and each kind's
    section. Every evaluator sees each example of its split exactly once."""

    evaluators: tuple[str, ...] = ("retrieval",)  # `kind` or `kind@split`
    batch_size: int = 128
    # resamples of the examples for each AUC's 95% interval (fixed seed); 0: no intervals
    bootstrap_samples: int = 1000
    retrieval: RetrievalEval = section(RetrievalEval)
    zeroshot: ZeroshotEval = section(ZeroshotEval)
    probe: ProbeEval = section(ProbeEval)
    diagnosis: DiagnosisEval = section(DiagnosisEval)
    generation: GenerationEval = section(GenerationEval)
    reconstruction: ReconstructionEval = section(ReconstructionEval)


KINDS = tuple(f.name for f in dataclasses.fields(EvalConfig)
              if isinstance(f.default_factory, type)
              and issubclass(f.default_factory, EvaluatorSection))

# The flat eval keys of configs written before the sections, and where each now lives.
LEGACY_KEYS = {
    "every": tuple(f"{kind}.every" for kind in KINDS),
    "recall_at": ("retrieval.recall_at",),
    "prompts": ("zeroshot.prompts",),
    "normal_prompts": ("zeroshot.normal_prompts",),
    "findings": ("zeroshot.findings", "probe.findings", "diagnosis.findings"),
    "probe_fractions": ("probe.fractions",),
    "probe_examples": ("probe.train_examples",),
    "probe_l2": ("probe.l2",),
    "generate_examples": ("generation.limit",),
    "generate_max_len": ("generation.max_len",),
    "beam_size": ("generation.beam_size",),
    "length_penalty": ("generation.length_penalty",),
    "examples": ("retrieval.examples", "generation.examples", "reconstruction.examples"),
}


def parse_name(name: str) -> tuple[str, str]:
    """'retrieval@train' -> ('retrieval', 'train'); 'retrieval' -> ('retrieval', '')."""
    kind, _, split = name.partition("@")
    return kind, split
