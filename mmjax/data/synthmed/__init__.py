"""SynthMed: synthetic patients with known ground truth in four modalities.

Real corpora come with noisy, partly unknown labels, so one cannot tell what a
multimodal model has learned. Here each patient is drawn from a small model of
correlated findings (`Patient`), and every modality is rendered from that latent
state, so retrieval and zero-shot probes have exact answers:

  image   PA chest radiograph phantom (`draw_radiograph`): cardiomegaly, effusion, ...
  video   apical four-chamber echo clip (`draw_echo`): LV size, ejection fraction, rhythm
  signal  12-lead ECG (`simulate_ecg`): rhythm (AF), rate, QRS voltage and width
  audio   heart sounds at the apex (`heart_sounds.phonocardiogram`): rhythm (AF), rate, a soft
          S1 and an S3 gallop with reduced EF, murmurs of mitral regurgitation (with reduced
          EF) and aortic stenosis (with age; heard, not in the findings or the reports)
  report  free-text radiology report (`write_report`)

As in real records, some patients lack some modalities (`Patient.has_*`); echo is
ordered more often when the heart is suspect, an ECG more often in AF.

A patient is a pure function of (seed, index), with one random stream per part
(latent, image, report, echo, ECG, later latents): any host can generate any shard,
and adding a modality leaves the existing ones unchanged.
"""

from mmjax.data.synthmed.auscultation import simulate_heart_sounds
from mmjax.data.synthmed.corpus import PRESENCE_FLAGS, generate
from mmjax.data.synthmed.drawing import MIN_IMAGE_SIZE
from mmjax.data.synthmed.ecg import ECG_RATE_HZ, ECG_SECONDS, simulate_ecg
from mmjax.data.synthmed.echo import (
    ECHO_FPS,
    PROBE_Y,
    SECTOR_DEPTH,
    SECTOR_HALF_ANGLE,
    draw_echo,
)
from mmjax.data.synthmed.patients import (
    FINDINGS,
    IMAGE_VISIBLE,
    NODULE_SIZE_MM,
    REPORT_STREAM,
    SIDES,
    ZONES,
    Consolidation,
    Effusion,
    Nodule,
    Patient,
    Pneumothorax,
    sample_patient,
)
from mmjax.data.synthmed.radiograph import MAX_PIXEL, draw_radiograph, window
from mmjax.data.synthmed.reports import write_report

__all__ = [
    "ECG_RATE_HZ",
    "ECG_SECONDS",
    "ECHO_FPS",
    "FINDINGS",
    "IMAGE_VISIBLE",
    "MAX_PIXEL",
    "MIN_IMAGE_SIZE",
    "NODULE_SIZE_MM",
    "PRESENCE_FLAGS",
    "PROBE_Y",
    "REPORT_STREAM",
    "SECTOR_DEPTH",
    "SECTOR_HALF_ANGLE",
    "SIDES",
    "ZONES",
    "Consolidation",
    "Effusion",
    "Nodule",
    "Patient",
    "Pneumothorax",
    "draw_echo",
    "draw_radiograph",
    "generate",
    "sample_patient",
    "simulate_ecg",
    "simulate_heart_sounds",
    "window",
    "write_report",
]
