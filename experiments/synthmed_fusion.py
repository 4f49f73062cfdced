"""The fusion comparison: the seven findings diagnosed from radiograph + echo + ECG, from
scratch, by each fusion in turn (the README's Models table):

  mmjax data synthmed --patients 5000 --eval-patients 512 --image-size 32 --frames 8 \
      --modalities image,video,signal,report --out runs/synthmed_fusion
  for kind in late decision early hybrid bottleneck; do
    mmjax train --config experiments/synthmed_fusion.py --workdir runs/fusion_$kind \
        --set model.fusion.kind=$kind
  done

Each finding lives in one modality (effusion, nodule, pneumothorax, consolidation on the
radiograph; reduced EF on the echo; AF on the ECG; cardiomegaly on radiograph and echo),
and some patients lack some modalities, so a fusion has to route every finding to the
modality that shows it and cope with the absent ones.
"""

from mmjax.config import Config


def get_config() -> Config:
    cfg = Config(name="synthmed_fusion")
    cfg.data.path = "runs/synthmed_fusion"
    cfg.data.modalities = ("image", "video", "signal")
    cfg.data.augment = False

    m = cfg.model
    for tower in (m.image, m.video, m.signal, m.fusion):
        tower.width, tower.depth, tower.num_heads, tower.mlp_dim = 64, 2, 4, 256
    m.image.patch_size = 8
    m.video.patch_size = 8
    m.fusion.depth = 1
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
    return cfg
