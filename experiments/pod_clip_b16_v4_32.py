"""CLIP pretraining at pod scale: ViT-B/16 image tower and a BERT-base text tower, 224 px
images and 77-token reports, a global batch of 32,768 (softmax InfoNCE over the whole
batch), bf16 compute, rematerialised blocks and 4-way exact (GradCache) accumulation, on a
TPU v4-32 slice (16 chips, 32 GiB HBM each) as a (data 16) mesh:

  python tools/launch_tpu.py --name clip-b16 --zone us-central2-b --accelerator v4-32 \\
      --config experiments/pod_clip_b16_v4_32.py --workdir /gcs/BUCKET/runs/clip-b16 --queued
  mmjax plan --config experiments/pod_clip_b16_v4_32.py --devices 16 --shape image_size=224 \\
      --shape vocab_size=30522

Planned per chip: weights side (parameters, gradients, Adam moments; f32) 2.90 GiB,
activations of 512 examples per micro-step 6.97 GiB, at least 9.87 GiB of 32
(tests/test_pod_configs.py keeps these numbers true).
"""

from mmjax.config import Config, TextConfig, ViTConfig, sized

DEVICES, HBM_GIB = 16, 32
PLAN_SHAPES = ("image_size=224", "vocab_size=30522")


def get_config() -> Config:
    cfg = Config(name="pod_clip_b16_v4_32")
    cfg.data.path = "/gcs/BUCKET/datasets/image_report"  # `mmjax data ingest` output
    cfg.data.modalities = ("image", "report")
    cfg.data.max_text_len = 77
    cfg.data.workers = 8
    m = cfg.model
    m.image = sized(ViTConfig, "base", patch_size=16, pool="cls")
    m.text = sized(TextConfig, "base", pool="cls")
    m.embed_dim = 512
    m.dtype, m.remat = "bfloat16", True
    cfg.objectives.contrastive = 1.0
    cfg.train.batch_size = 32768
    cfg.train.accumulation_steps = 4
    cfg.train.num_steps = 20000  # 655M examples
    cfg.train.log_every = 50
    cfg.train.checkpoint_every = 1000
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 2000
    cfg.optim.weight_decay = 0.2
    cfg.parallel.data, cfg.parallel.fsdp = -1, 1
    cfg.eval.retrieval.every = 2000
    return cfg
