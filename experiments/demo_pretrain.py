"""`make demo`, stage 1: pretrain a small image-report model on SynthMed chest radiographs
(contrastive, report generation, MAE), then evaluate it — held-out retrieval, zero-shot
findings, linear probes, generated reports, reconstructions. A few minutes on 2 CPU cores."""

from mmjax.config import Config

IMAGE_VISIBLE = ("cardiomegaly", "pleural_effusion", "nodule", "pneumothorax", "consolidation")


def get_config() -> Config:
    cfg = Config(name="demo_pretrain")
    cfg.data.path = "runs/synthmed"  # written by `make demo`, see the Makefile
    cfg.data.max_text_len = 64
    cfg.data.augment = False  # a few hundred steps do not overfit; augmentation only slows

    m = cfg.model
    m.image.patch_size, m.image.width, m.image.depth, m.image.mlp_dim = 8, 96, 3, 384
    m.text.width, m.text.depth, m.text.mlp_dim = 96, 2, 384
    m.decoder.width, m.decoder.depth, m.decoder.mlp_dim = 64, 1, 256
    m.embed_dim = 64

    o = cfg.objectives
    o.contrastive = 1.0
    o.caption = 0.5
    o.mae = 0.5
    o.mae_modalities = ("image",)

    cfg.train.batch_size = 128
    cfg.train.num_steps = 600
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 200
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 50

    e = cfg.eval
    e.evaluators = ("retrieval", "zeroshot", "probe", "generation", "reconstruction")
    e.zeroshot.findings = e.probe.findings = e.generation.findings = IMAGE_VISIBLE
    e.zeroshot.normal_prompts = ("Normal chest radiograph.",
                                 "No acute cardiopulmonary abnormality.")
    e.generation.limit = 0  # every held-out study with a report (~500, 10 s)
    return cfg
