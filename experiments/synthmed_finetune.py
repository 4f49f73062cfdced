"""Multi-task fine-tuning through hybrid fusion: diagnosis (seven findings, class-weighted)
and the risk outcome from image, echo, ECG and report, starting from
`synthmed_pretrain.py`'s encoders:

  mmjax train --config experiments/synthmed_finetune.py --workdir runs/finetune \
      --set init.from=runs/pretrain

Encoders and the hybrid fusion layers come from pretraining, the task heads are new;
encoders train at a layer-wise decayed rate.
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config


def get_config() -> Config:
    # The same data and encoders as the pretraining run, so parameter names match.
    cfg = config_lib.load(Path(__file__).with_name("synthmed_pretrain.py"))
    cfg.name = "synthmed_finetune"
    cfg.init.from_ = "runs/pretrain"

    o = cfg.objectives
    o.contrastive = 0.0
    o.mlm = o.mae = o.matching = o.caption = 0.0
    o.diagnosis = 1.0
    o.class_weights = True
    o.risk = 0.5
    o.weighting = "uncertainty"

    cfg.optim.learning_rate = 5e-4
    cfg.optim.layer_decay = 0.75
    cfg.optim.warmup_steps = 20
    cfg.train.num_steps = 300
    cfg.train.checkpoint_every = 150
    return cfg
