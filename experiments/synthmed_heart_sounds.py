"""Heart sounds and reports: contrastive pretraining of the audio encoder (AST-style log-mel
patches) against the reports, evaluated by audio->report retrieval and by linear probes for
atrial fibrillation and reduced ejection fraction on the frozen audio embeddings:

  mmjax data synthmed --patients 6000 --eval-patients 512 --image-size 32 --frames 8 \
      --out runs/synthmed_av
  mmjax train --config experiments/synthmed_heart_sounds.py --workdir runs/heart_sounds

SynthMed's reports mention AF and reduced EF only in an occasional history line, and the
heart sounds carry them (irregular beats, a soft S1, an S3 gallop, a regurgitant murmur),
together with correlates the report describes (an enlarged heart, effusions).
`synthmed_heart_sounds_diagnosis.py` trains the same encoder on the labels instead.
"""

from mmjax.config import Config

HEARD = ("atrial_fibrillation", "reduced_ejection_fraction")


def get_config() -> Config:
    cfg = Config(name="synthmed_heart_sounds")
    cfg.data.path = "runs/synthmed_av"
    cfg.data.modalities = ("audio", "report")
    cfg.data.max_text_len = 64
    cfg.data.audio_seconds = 4.0  # a random 4 s window of the 5 s recording when training

    m = cfg.model
    a = m.audio
    a.encoder, a.mel_bins, a.patch_size = "spectrogram", 32, 8
    a.width, a.depth, a.num_heads, a.mlp_dim = 64, 2, 4, 256
    m.text.width, m.text.depth, m.text.mlp_dim = 64, 2, 256
    m.embed_dim = 64

    o = cfg.objectives
    o.contrastive = 1.0
    o.contrastive_pairs = ("audio-report",)

    cfg.train.batch_size = 128
    cfg.train.num_steps = 500
    cfg.train.log_every = 20
    cfg.train.checkpoint_every = 250
    cfg.optim.learning_rate = 1e-3
    cfg.optim.warmup_steps = 50

    cfg.eval.evaluators = ("retrieval", "probe")
    cfg.eval.probe.findings = HEARD
    return cfg
