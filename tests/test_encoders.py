"""The CNN, frame + temporal, signal CNN and audio encoders train end to end like the
others: the loss falls under the mesh and the pmap strategies, and the two agree step for
step, BatchNorm statistics included (over the global batch on the mesh, psum'd over
devices under pmap)."""

import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from mmjax import config as config_lib
from mmjax.export.layout import INPUTS
from mmjax.train import metrics as metrics_lib
from mmjax.train.loop import train

STEPS = 5
# Models that between them use every new encoder; small enough to compile in seconds.
ENCODERS = {
    "resnet-batchnorm+frames-gru+spectrogram": [
        "model.image_encoder=resnet", "model.cnn.norm=batch",
        "model.video.encoder=frames", "model.video.frame_encoder=resnet",
        "model.video.temporal=gru", "model.video.pool=last", "model.audio.encoder=spectrogram",
    ],
    "vgg-groupnorm+frames-vit-transformer+waveform": [
        "model.image_encoder=vgg", "model.cnn.norm=group", "model.cnn.norm_groups=4",
        "model.video.encoder=frames", "model.video.frame_encoder=vit",
        "model.video.temporal=transformer", "model.audio.encoder=waveform",
    ],
    "frames-vgg-batchnorm-lstm": [
        "model.cnn.norm=batch", "model.video.encoder=frames", "model.video.frame_encoder=vgg",
        "model.video.temporal=lstm", "data.modalities=(video,report)",
        "objectives.contrastive_pairs=(video-report)",
    ],
    "xresnet1d-batchnorm": [
        "model.signal.encoder=xresnet1d", "model.signal_cnn.norm=batch",
        "model.signal_cnn.width=8", "model.signal_cnn.stages=(1,1)",
        "data.modalities=(signal,report)", "objectives.contrastive_pairs=(signal-report)",
    ],
}
SMALL = [
    "model.cnn.width=8", "model.cnn.stages=(1,1)", "model.cnn.stem=imagenet",
    "model.video.width=16", "model.video.depth=1", "model.video.num_heads=2",
    "model.video.mlp_dim=32", "model.audio.width=16", "model.audio.depth=1",
    "model.audio.num_heads=2", "model.audio.mlp_dim=32", "model.audio.patch_size=4",
    "data.modalities=(image,video,audio,report)",
    "objectives.contrastive_pairs=(image-report,video-report,audio-report)",
    "data.video_frames=4", "data.audio_seconds=1.0", "eval.evaluators=(retrieval,)",
    "eval.batch_size=32",
    # The same 32 patients every step: the loss must fall within a few steps.
    "train.batch_size=32", "data.train_fraction=0.07", "optim.warmup_steps=2",
    "optim.learning_rate=3e-3", f"train.num_steps={STEPS}", "train.log_every=1",
]


def _losses(workdir) -> list[float]:
    return [row["loss"] for row in metrics_lib.train_rows(workdir / "metrics.jsonl")]


@pytest.mark.parametrize("name", ENCODERS)
def test_encoders_train_alike_on_the_mesh_and_under_pmap(tmp_path, all_modalities_dataset,
                                                         name):
    cfg = tiny_config(all_modalities_dataset)
    for assignment in SMALL + ENCODERS[name]:
        config_lib.override(cfg, assignment)
    first = name == next(iter(ENCODERS))
    states = {}
    for strategy in ("mesh", "pmap"):
        cfg.parallel.strategy = strategy
        # The first model is also evaluated and exported, below.
        states[strategy] = train(cfg, tmp_path / strategy, progress=False,
                                 evaluate=first and strategy == "mesh")["state"]
    mesh, pmap = (_losses(tmp_path / s) for s in ("mesh", "pmap"))
    assert len(mesh) == STEPS and np.isfinite(mesh).all()
    assert mesh[-1] < 0.92 * mesh[0], mesh
    np.testing.assert_allclose(pmap, mesh, rtol=1e-4)
    stats = [jax.device_get(states[s].batch_stats) for s in ("mesh", "pmap")]
    uses_batch_norm = "norm=batch" in " ".join(ENCODERS[name])
    assert bool(jax.tree.leaves(stats[0])) == uses_batch_norm
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *stats)
    if first:
        _check_evaluation_and_export(tmp_path / "mesh", tmp_path / "export")


def _check_evaluation_and_export(workdir, out):
    """Evaluation and export use BatchNorm's running statistics: the exported ResNet, frame
    and audio encoders embed held-out examples exactly as the trained model does in
    `mmjax eval`; audio and video get retrieval metrics like any other modality."""
    from mmjax import trained
    from mmjax.export import export, load

    retrieval = json.loads((workdir / "eval" / "retrieval.json").read_text())["metrics"]
    assert set(retrieval) == {"image-report", "video-report", "audio-report"}
    assert retrieval["audio-report"]["num_examples"] > 20
    ctx = trained.load(workdir)
    assert jax.tree.leaves(ctx.variables["batch_stats"])  # the running statistics came back
    exported = load(export(workdir, out))
    batch = next(ctx.batches())
    for modality in ("image", "video", "audio"):
        names = INPUTS[modality]
        want = jax.jit(lambda v, b, m=modality: ctx.model.apply(
            v, b, method=lambda model, b: model.embed(m, model.encode(m, b)[0])))(
            ctx.variables, {n: batch[n] for n in names})
        got = exported.embed(modality, *(np.asarray(batch[n]) for n in names))
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-5, err_msg=modality)
