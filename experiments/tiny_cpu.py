"""The demo: a tiny image-text CLIP on SynthMed chest radiographs, a few minutes on 2 CPU cores."""

from mmjax.config import Config


def get_config() -> Config:
    cfg = Config(name="tiny_cpu")
    cfg.data.path = "runs/synthmed"  # written by `make demo`, see the Makefile
    cfg.data.max_text_len = 64
    cfg.data.augment = False  # 600 steps do not overfit; augmentation only slows learning
    cfg.model.image.patch_size = 8
    cfg.model.image.width = 96
    cfg.model.image.depth = 3
    cfg.model.text.width = 96
    cfg.model.text.depth = 2
    cfg.model.embed_dim = 64
    cfg.train.batch_size = 128
    cfg.train.num_steps = 600
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 200
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 50
    return cfg
