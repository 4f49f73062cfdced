"""`pod_clip_b16_v4_32.py` on a TPU v5p-64 slice (32 chips, 95 GiB HBM each): the same
ViT-B/16 + BERT-base CLIP at a global batch of 32,768, without accumulation (1,024
examples per chip per step), as a (data 32) mesh:

  python tools/launch_tpu.py --name clip-b16 --zone us-east5-a --accelerator v5p-64 \\
      --config experiments/pod_clip_b16_v5p_64.py --workdir /gcs/BUCKET/runs/clip-b16 --queued
  mmjax plan --config experiments/pod_clip_b16_v5p_64.py --devices 32 --shape image_size=224 \\
      --shape vocab_size=30522

Planned per chip: weights side 2.90 GiB, activations 13.94 GiB, at least 16.84 GiB of 95.
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config

DEVICES, HBM_GIB = 32, 95
PLAN_SHAPES = ("image_size=224", "vocab_size=30522")


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("pod_clip_b16_v4_32.py"))
    cfg.name = "pod_clip_b16_v5p_64"
    cfg.train.accumulation_steps = 1
    return cfg
