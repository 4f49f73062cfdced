"""Reduced ejection fraction (and AF) from the echo clip: each frame through a small ResNet,
then a GRU over the frames (`--set model.video.temporal=lstm|transformer`, or
`--set model.video.encoder=tubelet --set model.video.pool=mean` for the space-time
transformer, which has no 'last' frame to pool):

  mmjax train --config experiments/synthmed_echo_frames.py --workdir runs/echo_frames
"""

from mmjax.config import Config


def get_config() -> Config:
    cfg = Config(name="synthmed_echo_frames")
    cfg.data.path = "runs/synthmed_av"
    cfg.data.modalities = ("video",)
    cfg.data.augment = False

    m = cfg.model
    v = m.video
    v.encoder, v.frame_encoder, v.temporal, v.pool = "frames", "resnet", "gru", "last"
    v.width, v.depth = 64, 1
    c = m.cnn
    c.stages, c.width, c.norm, c.stem = (1, 1, 1), 16, "batch", "small"
    m.embed_dim = 64

    o = cfg.objectives
    o.contrastive = 0.0
    o.diagnosis = 1.0
    o.class_weights = True

    cfg.train.batch_size = 64
    cfg.train.num_steps = 400
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 400
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 30
    cfg.eval.evaluators = ("diagnosis",)
    cfg.eval.diagnosis.findings = ("reduced_ejection_fraction", "atrial_fibrillation",
                                   "cardiomegaly")
    return cfg
