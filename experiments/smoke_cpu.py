"""The smallest run that exercises every stage in seconds; the tests train it."""

from mmjax.config import Config


def get_config() -> Config:
    cfg = Config(name="smoke_cpu")
    cfg.data.max_text_len = 96
    cfg.data.augment = False  # a 300-step run learns faster without it
    cfg.model.image.patch_size = 8
    cfg.model.image.width = 48
    cfg.model.image.depth = 1
    cfg.model.image.mlp_dim = 96
    cfg.model.text.width = 48
    cfg.model.text.depth = 1
    cfg.model.text.mlp_dim = 96
    cfg.model.embed_dim = 32
    cfg.train.batch_size = 64
    cfg.train.num_steps = 300
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 100
    cfg.optim.learning_rate = 2e-3
    cfg.optim.warmup_steps = 10
    cfg.eval.batch_size = 64
    return cfg
