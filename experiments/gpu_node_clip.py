"""ViT-B/16 + BERT-base CLIP on one GPU node of 8 H100/H200 (80/141 GiB), a (data 8) mesh,
global batch 4,096, bf16 (cuDNN flash attention through jax.nn.dot_product_attention),
rematerialised blocks; several nodes under SLURM add data parallelism:

  sbatch --nodes=1 tools/launch_slurm.sh experiments/gpu_node_clip.py /shared/runs/clip
  mmjax plan --config experiments/gpu_node_clip.py --devices 8 --shape image_size=224 \\
      --shape vocab_size=30522

Planned per GPU: weights side 2.90 GiB, activations 6.86 GiB, at least 9.76 GiB of 80.
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config

DEVICES, HBM_GIB = 8, 80
PLAN_SHAPES = ("image_size=224", "vocab_size=30522")


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("pod_clip_b16_v4_32.py"))
    cfg.name = "gpu_node_clip"
    cfg.data.path = "/shared/datasets/image_report"
    cfg.train.batch_size = 4096
    cfg.train.accumulation_steps = 1
    return cfg
