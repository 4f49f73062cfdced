"""A ViT-L/14 image tower with a BERT-base text tower, parameters and optimizer state split
16 ways (FSDP) within each of 8 data-parallel groups, on a TPU v5p-256 slice (128 chips,
95 GiB HBM each); global batch 32,768, bf16, rematerialised blocks:

  python tools/launch_tpu.py --name clip-l14 --zone us-east5-a --accelerator v5p-256 \\
      --config experiments/pod_vit_l14_fsdp_v5p_256.py --workdir /gcs/BUCKET/runs/clip-l14 --queued
  mmjax plan --config experiments/pod_vit_l14_fsdp_v5p_256.py --devices 128 \\
      --shape image_size=224 --shape vocab_size=30522

Planned per chip: weights side 0.39 GiB (16-way FSDP), activations 7.10 GiB, at least
7.49 GiB of 95.
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config, ViTConfig, sized

DEVICES, HBM_GIB = 128, 95
PLAN_SHAPES = ("image_size=224", "vocab_size=30522")


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("pod_clip_b16_v4_32.py"))
    cfg.name = "pod_vit_l14_fsdp_v5p_256"
    cfg.model.image = sized(ViTConfig, "large", patch_size=14, pool="cls")
    cfg.model.embed_dim = 768
    cfg.train.accumulation_steps = 1
    cfg.parallel.data, cfg.parallel.fsdp = 8, 16
    return cfg
