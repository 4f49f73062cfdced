"""Exported encoders: reloaded where flax and mmjax.nn are never imported, they embed any
batch size like the trained model; the folder carries a model card and is refused when
it would overwrite something else."""

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import initialised_workdir, tiny_config, tree_digest

import mmjax
from mmjax import config as config_lib
from mmjax import export as export_lib
from mmjax import trained
from mmjax.data import pipeline
from mmjax.eval import registry
from mmjax.eval.context import EvalContext
from mmjax.export.layout import INPUTS
from mmjax.nn.build import model_variables, variable_shardings

MODALITIES = ("image", "video", "signal", "report")
BATCH_SIZES = (2, 5)
TEXTS = ["no acute cardiopulmonary abnormality.",
         "moderate cardiomegaly and a small left pleural effusion. " * 30]  # cut at 96 tokens

# Run in a fresh interpreter: embeds the saved inputs with the export alone.
# Everything the loader must not need (the README's loader install has none of it): an
# import of any of them fails in the script, as in an environment without them.
NOT_THE_LOADERS = ("etils", "flax", "orbax", "optax", "grain", "tensorflow",
                   "tensorflow_datasets", "sentencepiece", "google.protobuf", "matplotlib",
                   "pydicom", "av", "mmjax.config", "mmjax.nn", "mmjax.train", "mmjax.eval")
LOAD_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == m or name.startswith(m + ".") for m in json.loads(sys.argv[6])):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Absent())
    import numpy as np
    from mmjax.export import load

    model = load(sys.argv[1])
    inputs = np.load(sys.argv[2])
    out = {}
    for modality, entry in model.info["modalities"].items():
        xs = [inputs[f"{modality}.{i}"] for i in range(len(entry["inputs"]))]
        for size in json.loads(sys.argv[4]):
            out[f"{modality}.{size}"] = model.embed(modality, *(x[:size] for x in xs))
    out["image"] = model.embed_image(inputs["image.0"])
    out["texts"] = model.embed_text(json.loads(sys.argv[5]))
    np.savez(sys.argv[3], **out)
""")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, all_modalities_dataset):
    """Every encoder (video and signal shrunk) as initialised, checkpointed as a run's
    step 1 with a held-out retrieval eval; exporting does not care whether it trained,
    and skipping the train step's compilation keeps this test fast."""
    cfg = tiny_config(all_modalities_dataset)
    cfg.data.modalities = MODALITIES
    cfg.objectives.contrastive_pairs = ("image-report", "video-report", "signal-report")
    for encoder in (cfg.model.video, cfg.model.signal):
        encoder.width, encoder.depth, encoder.mlp_dim = 32, 1, 64
    cfg.train.batch_size = 16
    workdir = tmp_path_factory.mktemp("workdir")
    run, data = initialised_workdir(cfg, workdir)
    variables = model_variables(run.state.params, run.state.batch_stats)
    shardings = variable_shardings(run.param_shardings, run.mesh, bool(run.state.batch_stats))
    ctx = EvalContext(cfg, run.definition.module, variables, shardings, run.mesh,
                      data.tokenizer, data.label_names, 1, workdir / "eval")
    registry.run_all(ctx, registry.resolve(cfg))
    return workdir


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
    """(export folder, the workdir's file hashes before exporting)."""
    before = tree_digest(workdir)
    return export_lib.export(workdir, tmp_path_factory.mktemp("exports") / "model"), before


def _references(workdir):
    """Inputs of the first eval examples and the model's embeddings of them."""
    ctx = trained.load(workdir)
    variables = jax.device_get(ctx.variables)

    def apply(*inputs, method):  # jitted: flax run op by op takes seconds per encoder
        return jax.jit(lambda *xs: ctx.model.apply(variables, *xs, method=method))(*inputs)

    source, transform = pipeline.open_split(ctx.cfg.data, ctx.cfg.data.eval_split,
                                            ctx.tokenizer)
    examples = [transform(source[i]) for i in range(max(BATCH_SIZES))]
    inputs, expected = {}, {}
    for modality in MODALITIES:
        names = INPUTS[modality]
        batch = {n: np.stack([e[n] for e in examples]) for n in names}
        inputs.update({f"{modality}.{i}": batch[n] for i, n in enumerate(names)})
        if modality == "image":
            full = apply(batch["image"], method=ctx.model.embed_image)
        elif modality == "report":
            full = apply(batch["text"], batch["text_mask"], method=ctx.model.embed_text)
        else:
            full = apply(batch, method=lambda model, b, m=modality:
                         model.embed(m, model.encode(m, b)[0]))
        expected.update({f"{modality}.{size}": full[:size] for size in BATCH_SIZES})
    expected["image"] = expected[f"image.{max(BATCH_SIZES)}"]
    expected["texts"] = ctx.embed_texts(TEXTS)
    return inputs, expected


def test_reloaded_without_model_code_embeds_like_the_model(exported, workdir, tmp_path):
    out, _ = exported
    inputs, expected = _references(workdir)
    np.savez(tmp_path / "inputs.npz", **inputs)
    result = tmp_path / "embeddings.npz"
    subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out), str(tmp_path / "inputs.npz"),
                    str(result), json.dumps(BATCH_SIZES), json.dumps(TEXTS),
                    json.dumps(NOT_THE_LOADERS)],
                   check=True, timeout=120)
    got = np.load(result)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(np.linalg.norm(got[key], axis=-1), 1.0, atol=1e-4)


def test_export_json_describes_the_functions(exported):
    out, _ = exported
    info = json.loads((out / "export.json").read_text())
    assert info["step"] == 1 and info["embed_dim"] == 32 and info["max_text_len"] == 96
    assert info["mmjax_version"] == mmjax.__version__
    assert list(info["modalities"]) == list(MODALITIES)
    assert info["modalities"]["image"]["inputs"] == [
        {"name": "image", "shape": ["batch", 32, 32, 1], "dtype": "float32"}]
    assert [i["shape"] for i in info["modalities"]["signal"]["inputs"]] == [
        ["batch", 1000, 12], ["batch", 12]]
    assert "100 Hz" in info["modalities"]["signal"]["preprocessing"]
    assert set(info["files"]) | {"export.json"} == {p.name for p in out.iterdir()}
    assert len(info["label_names"]) == 7
    model = export_lib.load(out)
    assert model.modalities == MODALITIES and model.label_names == tuple(info["label_names"])


def test_model_card_names_data_metrics_and_limitations(exported):
    card = (exported[0] / "MODEL_CARD.md").read_text()
    for needed in ("## Model", "## Training data", "## Training", "## Held-out metrics",
                   "## Intended use", "## Limitations", "held-out retrieval image-report",
                   "R@1", "chance", "Not for clinical use", "synthetic", "calibrated",
                   "Distribution shift", "cardiomegaly", "| train | 512 |", "| eval | 64 |",
                   "contrastive"):
        assert needed in card, needed


def test_workdir_is_not_modified(exported, workdir):
    assert tree_digest(workdir) == exported[1]


def test_errors_name_the_file_and_the_expected_shape(exported, tmp_path):
    copy = shutil.copytree(exported[0], tmp_path / "copy")
    model = export_lib.load(copy)
    with pytest.raises(ValueError, match=r"image input 'image' must have shape "
                                         r"\[batch, 32, 32, 1\], got \[2, 16, 16, 1\]"):
        model.embed_image(np.zeros((2, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match=r"signal takes 2 inputs \(signal, signal_leads\)"):
        model.embed("signal", np.zeros((2, 1000, 12), np.float32))
    with pytest.raises(ValueError, match="no 'audio' encoder"):
        model.embed("audio", np.zeros(3))
    (copy / "video.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="video.safetensors"):
        export_lib.load(copy)


def test_only_an_empty_folder_or_a_previous_export_is_written(exported, workdir, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(config_lib.ConfigError, match="foreign is not empty"):
        export_lib.export(workdir, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(config_lib.ConfigError, match="inside the workdir"):
        export_lib.export(workdir, workdir / "export")

    previous = shutil.copytree(exported[0], tmp_path / "previous")
    (previous / "MODEL_CARD.md").write_text("stale")
    export_lib.export(workdir, previous)
    assert tree_digest(previous) == tree_digest(exported[0])
    (previous / "notes.txt").write_text("mine")
    with pytest.raises(config_lib.ConfigError, match=r"also \['notes.txt'\]"):
        export_lib.export(workdir, previous)
    assert not list(tmp_path.glob(".*partial*"))


def _standardised_images(model, count: int, seed: int = 0) -> np.ndarray:
    shape = model.info["modalities"]["image"]["inputs"][0]["shape"][1:]
    x = np.random.default_rng(seed).random((count, *shape)).astype(np.float32)
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axes, keepdims=True)) / x.std(axes, keepdims=True)


def test_batches_are_padded_so_new_sizes_do_not_recompile(exported):
    """Sizes 3 and 4 run at 4: one compilation, and the padding changes no embedding."""
    out, _ = exported
    model = mmjax.export.load(out)
    images = _standardised_images(model, 5)
    four, three = model.embed_image(images[:4]), model.embed_image(images[:3])
    assert three.shape == (3, model.embed_dim)
    np.testing.assert_allclose(three, four[:3], atol=1e-6)
    assert model._functions["image"][0]._cache_size() == 1
    assert model.embed_image(images).shape == (5, model.embed_dim)  # runs at 8
    assert model._functions["image"][0]._cache_size() == 2
    assert [mmjax.export.reader.padded_size(n) for n in (1, 2, 3, 8, 9)] == [1, 2, 4, 8, 16]


def test_unprepared_inputs_are_refused_not_embedded(exported):
    """Raw uint8 pixels, [0, 255] floats, NaN and an empty batch: each an error saying what
    export.json's preprocessing asks, never a silent embedding."""
    out, _ = exported
    model = mmjax.export.load(out)
    images = _standardised_images(model, 2)
    raw = np.round((images - images.min()) / np.ptp(images) * 255)
    with pytest.raises(ValueError, match=r"image input 'image' must be prepared floats .*uint8"):
        model.embed_image(raw.astype(np.uint8))
    with pytest.raises(ValueError, match=r"example 0 has mean 1\d\d.* not 0 and 1"):
        model.embed_image(raw)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.embed_image(np.where(images > 1, np.nan, images))
    with pytest.raises(ValueError, match="empty batch"):
        model.embed_image(images[:0])
    constant = np.zeros_like(images)  # a blank image standardises to zeros: accepted
    assert np.isfinite(model.embed_image(constant)).all()
