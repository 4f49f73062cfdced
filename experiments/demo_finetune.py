"""`make demo`, stage 2: fine-tune the pretrained image encoder to diagnose the seven
findings from the radiograph alone (class-weighted BCE, layer-wise decayed learning
rates), then evaluate held-out diagnosis AUC:

  mmjax train --config experiments/demo_finetune.py --workdir runs/demo/finetune

With `--set data.train_fraction=0.01` it sees 1% of the labelled patients; with
`--set init.from=` it starts from scratch instead (the demo runs both to show what
pretraining buys when labels are scarce).
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config


def get_config() -> Config:
    # The pretraining run's data and encoder shapes, so parameter names match.
    cfg = config_lib.load(Path(__file__).with_name("demo_pretrain.py"))
    cfg.name = "demo_finetune"
    cfg.init.from_ = "runs/demo/pretrain"
    cfg.data.modalities = ("image",)

    o = cfg.objectives
    o.contrastive = o.caption = o.mae = 0.0
    o.diagnosis = 1.0
    o.class_weights = True

    cfg.optim.learning_rate = 1e-3
    cfg.optim.layer_decay = 0.75
    cfg.optim.warmup_steps = 20
    cfg.train.num_steps = 600
    cfg.train.checkpoint_every = 600
    cfg.eval.evaluators = ("diagnosis", "probe")
    cfg.eval.diagnosis.findings = cfg.eval.probe.findings  # the image-visible ones
    return cfg
