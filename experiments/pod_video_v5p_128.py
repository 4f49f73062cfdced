"""Echo/endoscopy video–report CLIP: 16-frame 224 px clips as 2x16x16 tubelets (1,568
tokens) through a ViT-B-sized space-time transformer, a BERT-base text tower, on a TPU
v5p-128 slice (64 chips, 95 GiB HBM each) as a (data 16, fsdp 4) mesh; global batch
4,096, bf16, rematerialised blocks:

  python tools/launch_tpu.py --name video-clip --zone us-east5-a --accelerator v5p-128 \\
      --config experiments/pod_video_v5p_128.py --workdir /gcs/BUCKET/runs/video-clip --queued
  mmjax plan --config experiments/pod_video_v5p_128.py --devices 64 --shape image_size=224 \\
      --shape frames=16 --shape vocab_size=30522

Planned per chip: weights side 0.73 GiB, activations 11.42 GiB, at least 12.15 GiB of 95.
"""

from pathlib import Path

from mmjax import config as config_lib
from mmjax.config import Config, VideoConfig, sized

DEVICES, HBM_GIB = 64, 95
PLAN_SHAPES = ("image_size=224", "frames=16", "vocab_size=30522")


def get_config() -> Config:
    cfg = config_lib.load(Path(__file__).with_name("pod_clip_b16_v4_32.py"))
    cfg.name = "pod_video_v5p_128"
    cfg.data.path = "/gcs/BUCKET/datasets/video_report"
    cfg.data.modalities = ("video", "report")
    cfg.model.video = sized(VideoConfig, "base", tubelet_frames=2, patch_size=16)
    cfg.objectives.contrastive_pairs = ("video-report",)
    cfg.train.batch_size = 4096
    cfg.train.accumulation_steps = 1
    cfg.parallel.data, cfg.parallel.fsdp = 16, 4
    return cfg
