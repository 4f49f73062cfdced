"""A ResNet-18-style CNN diagnosing the seven findings from 32 px SynthMed radiographs, from
scratch, with BatchNorm (statistics over the global batch however it is sharded):

  mmjax train --config experiments/synthmed_cnn.py --workdir runs/cnn \
      [--set model.image_encoder=vgg --set model.cnn.stages=1,1,2,2,2]

Compare with `demo_finetune.py --set init.from=` (the ViT from scratch).
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("demo_finetune.py"))
    cfg.name = "synthmed_cnn"
    cfg.init.from_ = ""
    cfg.optim.layer_decay = 1.0
    c = cfg.model.cnn
    cfg.model.image_encoder = "resnet"
    c.stages, c.width, c.norm, c.stem = (2, 2, 2, 2), 16, "batch", "small"
    cfg.eval.evaluators = ("diagnosis",)
    return cfg
