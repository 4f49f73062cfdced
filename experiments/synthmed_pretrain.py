"""All-modality pretraining on SynthMed: image, echo video and ECG each aligned to the
report (contrastive), plus MLM on the report, MAE on all three, image-report matching
through hybrid fusion, and report generation. About 7 minutes on 2 CPU cores; the data
is `make demo`'s."""

from mmjax.config import Config


def get_config() -> Config:
    cfg = Config(name="synthmed_pretrain")
    cfg.data.path = "runs/synthmed"
    cfg.data.modalities = ("image", "video", "signal", "report")
    cfg.data.max_text_len = 64
    cfg.data.augment = False
    cfg.data.signal_seconds = 5.0  # a 5 s window of the 10 s, 12-lead ECG

    m = cfg.model
    m.image.patch_size, m.image.width, m.image.depth, m.image.mlp_dim = 8, 64, 2, 256
    m.video.tubelet_frames, m.video.patch_size = 2, 8
    m.video.width, m.video.depth, m.video.mlp_dim = 64, 2, 256
    m.signal.patch_size, m.signal.width, m.signal.depth, m.signal.mlp_dim = 25, 64, 2, 256
    m.text.width, m.text.depth, m.text.mlp_dim = 64, 2, 256
    m.decoder.width, m.decoder.depth = 64, 1
    # Report tokens cross-attend to the other modalities (ALBEF): matching needs the
    # interaction, and the fine-tune starts from these fusion layers too.
    m.fusion.kind = "hybrid"
    m.fusion.width, m.fusion.depth, m.fusion.mlp_dim = 64, 1, 256
    m.embed_dim = 64

    o = cfg.objectives
    o.contrastive = 1.0
    o.contrastive_pairs = ("image-report", "video-report", "signal-report", "image-signal")
    o.mlm = 0.5
    o.mae = 0.5
    o.mae_modalities = ("image", "video", "signal")
    o.matching = 0.25
    o.caption = 0.25

    cfg.train.batch_size = 64
    cfg.train.num_steps = 500
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 250
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 50
    cfg.eval.batch_size = 64
    return cfg
