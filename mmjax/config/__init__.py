"""Experiment configuration: typed, nested dataclasses, validated when they load.

Dataclasses rather than ml_collections because the field annotations give every
`--set a.b=c` override its type for free (a Literal its choices), a typo fails as an
error naming the key (in an override, a config.json or an experiment file's
`cfg.train.num_stepz = 5`) instead of silently creating a new field, and editors complete
and type-check configs. `validate` holds the rules between fields; `load`, `read` and
`apply` run it. Experiment files in `experiments/` are plain Python exposing
`get_config() -> Config`.

sections.py and evaluation.py define the sections, io.py reads and writes them,
values.py checks values against their fields, rules.py is `validate`.
"""

from mmjax.config.base import Section
from mmjax.config.evaluation import (
    KINDS,
    AucSection,
    DiagnosisEval,
    EvalConfig,
    EvaluatorSection,
    GenerationEval,
    ProbeEval,
    ReconstructionEval,
    RetrievalEval,
    ZeroshotEval,
    parse_name,
)
from mmjax.config.io import (
    PATH_KEYS,
    absolute_paths,
    apply,
    differences,
    from_dict,
    leaf_keys,
    load,
    override,
    read,
    save,
    to_dict,
)
from mmjax.config.rules import (
    PATCH_ENCODERS,
    check_evaluators,
    encoder_kind,
    has_patches,
    initial_temperature,
    uses_batch_norm,
    validate,
    video_pools,
)
from mmjax.config.sections import (
    SIZES,
    AudioConfig,
    CNNConfig,
    Config,
    DataConfig,
    DecoderConfig,
    FusionConfig,
    InitConfig,
    ModelConfig,
    ObjectivesConfig,
    OptimConfig,
    ParallelConfig,
    SignalCNNConfig,
    SignalConfig,
    TextConfig,
    TrainConfig,
    TransformerSize,
    VideoConfig,
    ViTConfig,
    sized,
)
from mmjax.errors import ConfigError

__all__ = [
    "KINDS", "PATCH_ENCODERS", "PATH_KEYS", "SIZES", "AucSection", "AudioConfig", "CNNConfig",
    "Config", "ConfigError", "DataConfig", "DecoderConfig", "DiagnosisEval", "EvalConfig",
    "EvaluatorSection", "FusionConfig", "GenerationEval", "InitConfig", "ModelConfig",
    "ObjectivesConfig", "OptimConfig", "ParallelConfig", "ProbeEval", "ReconstructionEval",
    "RetrievalEval", "Section", "SignalCNNConfig", "SignalConfig", "TextConfig", "TrainConfig",
    "TransformerSize", "VideoConfig", "ViTConfig", "ZeroshotEval", "absolute_paths", "apply",
    "check_evaluators", "differences", "encoder_kind", "from_dict", "has_patches",
    "initial_temperature", "leaf_keys", "load", "override", "parse_name", "read", "save",
    "sized", "to_dict", "uses_batch_norm", "validate", "video_pools",
]
