"""Diagnosis from heart sounds alone: atrial fibrillation and reduced ejection fraction (and
the other findings, through their correlates) from the audio encoder, class-weighted BCE:

  mmjax train --config experiments/synthmed_heart_sounds_diagnosis.py \
      --workdir runs/heart_sounds_diagnosis [--set init.from=runs/heart_sounds]
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("synthmed_heart_sounds.py"))
    cfg.name = "synthmed_heart_sounds_diagnosis"
    cfg.data.modalities = ("audio",)
    o = cfg.objectives
    o.contrastive = 0.0
    o.diagnosis = 1.0
    o.class_weights = True
    cfg.eval.evaluators = ("diagnosis",)
    return cfg
