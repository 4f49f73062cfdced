"""`mmjax import` turns a pretrained checkpoint into a workdir that `mmjax eval --data` and
`init.from` take: the imported weights, the tokenizer and the image preprocessing travel
with it (fixtures: see tests/test_interop.py)."""

import json
import logging
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from conftest import tiny_config
from flax import traverse_util
from safetensors.numpy import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from mmjax import config as config_lib
from mmjax import trained
from mmjax.cli import main
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.interop import big_vision, clip, siglip
from mmjax.train.loop import train

FIXTURES = Path(__file__).parent / "data" / "interop"


def _tokenizer(path: Path, specials: dict[str, int], template: str, size: int = 512) -> Path:
    """A word-level tokenizer.json of `size` ids with the model's special tokens."""
    words = [f"w{i}" for i in range(size) if i not in specials.values()]
    vocab = {**dict(zip(words, (i for i in range(size) if i not in specials.values()),
                        strict=True)), **specials}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=words[0]))
    tok.add_special_tokens(list(specials))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, i) for t, i in specials.items() if t in template])
    tok.save(str(path))
    return path


def _assert_same_tensors(got: Path, want: Path) -> None:
    """Two safetensors files with the same names and, bit for bit, the same arrays."""
    got, want = load_file(str(got)), load_file(str(want))
    assert got.keys() == want.keys()
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def _assert_same_params(got: dict, want: dict) -> None:
    """Every leaf of the parameter tree `got` equals `want`'s at its path, bit for bit."""
    want = traverse_util.flatten_dict(want, sep="/")
    for name, value in traverse_util.flatten_dict(got, sep="/").items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


def _clip_tokenizer(tmp_path: Path) -> Path:
    return _tokenizer(tmp_path / "tokenizer.json", {"<|startoftext|>": 510, "<|endoftext|>": 511},
                      "<|startoftext|> $A <|endoftext|>")


def test_an_imported_clip_evaluates_and_keeps_its_weights(tmp_path, smoke_dataset, capsys):
    workdir = tmp_path / "clip"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    cfg = config_lib.read(workdir / "config.json")
    assert (cfg.data.image_size, cfg.data.image_channels, cfg.data.max_text_len) == (32, 3, 16)
    assert cfg.data.image_mean[0] == 0.48145466  # OpenAI CLIP's normalisation

    ctx = trained.load(workdir, data_path=smoke_dataset)
    ref = np.load(FIXTURES / "hf_clip_io.npz")
    images = jnp.asarray(ref["pixel_values"].transpose(0, 2, 3, 1))
    embedded = ctx.model.apply(ctx.variables, images, method=ctx.model.embed_image)
    np.testing.assert_allclose(embedded, ref["image_embeds"], atol=1e-4)

    capsys.readouterr()
    assert main(["eval", "--workdir", str(workdir), "--data", str(smoke_dataset)]) == 0
    assert "zero-shot image" in capsys.readouterr().out  # 32 px grey fed as CLIP's RGB
    assert json.loads((workdir / "eval" / "retrieval.json").read_text())["step"] == 0

    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--workdir",
                 str(workdir)]) == 2  # never over a workdir
    assert main(["eval", "--workdir", str(workdir)]) == 2  # which data: it has none
    assert "pass the one to evaluate with --data" in capsys.readouterr().err


def test_fine_tuning_starts_from_an_imported_model(tmp_path, smoke_dataset, caplog):
    workdir = tmp_path / "clip"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    imported = config_lib.read(workdir / "config.json")
    cfg = tiny_config(smoke_dataset)
    cfg.model, cfg.data.tokenizer = imported.model, str(workdir / "tokenizer.json")
    for key in ("image_size", "image_channels", "image_mean", "image_std", "max_text_len"):
        setattr(cfg.data, key, getattr(imported.data, key))
    cfg.init.from_ = str(workdir)
    cfg.train.num_steps, cfg.train.batch_size, cfg.eval.evaluators = 1, 16, ()
    with caplog.at_level(logging.INFO):
        train(cfg, tmp_path / "finetune", progress=False, evaluate=False)
    restored = next(r.getMessage() for r in caplog.records if "tensors restored" in r.message)
    towers = len(traverse_util.flatten_dict(clip.from_hf(FIXTURES / "hf_clip").params))
    # Every imported tensor, and the sigmoid bias the import initialised; nothing else.
    assert restored.startswith(f"init.from: {towers + 1} tensors restored, 0 new")
    assert "0 of the checkpoint unused, 0 with other shapes" in restored


def test_siglip_keeps_the_pad_token_its_tokenizer_config_names(tmp_path):
    folder = tmp_path / "siglip"
    shutil.copytree(FIXTURES / "hf_siglip", folder)
    _tokenizer(folder / "tokenizer.json", {"<pad>": 0, "</s>": 1}, "$A </s>")
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "</s>"}))
    assert main(["import", "--from", "hf", str(folder), "--workdir", str(tmp_path / "w")]) == 0
    tok = tokenizer_lib.load(tmp_path / "w" / "tokenizer.json")
    assert tokenizer_lib.specials(tok).pad == 1  # </s>, as transformers pads, not <pad>
    cfg = config_lib.read(tmp_path / "w" / "config.json")
    assert cfg.objectives.contrastive_loss == "sigmoid" and cfg.data.image_mean == (0.5,) * 3
    assert cfg.data.image_interpolation == "bilinear"  # SiglipImageProcessor's default
    assert cfg.model.text.attend_padding and cfg.data.max_text_len == 16


def test_export_to_hugging_face_gives_the_checkpoint_back_bit_for_bit(tmp_path):
    """Import the transformers CLIP, export it as a CLIPModel folder: the same tensors,
    names and sizes (`tools/check_hf_export.py` loads such a folder in transformers)."""
    workdir, out = tmp_path / "clip", tmp_path / "hf"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--format", "hf"]) == 0
    _assert_same_tensors(out / "model.safetensors",
                         FIXTURES / "hf_clip" / "model.safetensors")
    config, source = (json.loads((d / "config.json").read_text()) for d in (out, FIXTURES /
                                                                             "hf_clip"))
    for tower in ("text_config", "vision_config"):
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "hidden_act", "layer_norm_eps"):
            assert config[tower][key] == source[tower][key], (tower, key)
    assert config["text_config"]["eos_token_id"] == 511  # pooled where mmjax pools
    assert clip.from_hf(out).model == clip.from_hf(FIXTURES / "hf_clip").model


def test_a_model_clip_cannot_express_is_refused_naming_the_option(tmp_path, smoke_dataset,
                                                                   capsys):
    cfg = tiny_config(smoke_dataset)
    cfg.train.num_steps, cfg.train.batch_size = 1, 16
    train(cfg, tmp_path / "native", progress=False, evaluate=False)
    assert main(["export", "--workdir", str(tmp_path / "native"), "--out",
                 str(tmp_path / "hf"), "--format", "hf"]) == 2
    assert "model.image.pre_norm=False: a Hugging Face CLIPModel needs True" in \
        capsys.readouterr().err


def test_export_to_open_clip_gives_the_state_dict_back_bit_for_bit(tmp_path):
    workdir, out = tmp_path / "clip", tmp_path / "oc"
    assert main(["import", "--from", "open_clip", str(FIXTURES / "open_clip_vit.safetensors"),
                 "--config", str(FIXTURES / "open_clip_vit.json"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--format",
                 "open_clip"]) == 0
    _assert_same_tensors(out / "open_clip_model.safetensors",
                         FIXTURES / "open_clip_vit.safetensors")
    spec = json.loads((out / "open_clip_config.json").read_text())
    source = json.loads((FIXTURES / "open_clip_vit.json").read_text())
    for tower in ("vision_cfg", "text_cfg"):
        for key, value in source[tower].items():
            assert spec["model_cfg"][tower][key] == value, (tower, key)
    again = clip.from_open_clip(out / "open_clip_model.safetensors", out / "open_clip_config.json")
    assert again.model == clip.from_open_clip(FIXTURES / "open_clip_vit.safetensors",
                                              FIXTURES / "open_clip_vit.json").model


def test_an_imported_model_exports_for_mmjax_export_load(tmp_path, smoke_dataset):
    """StableHLO export at the shapes of a dataset given with --data; the loader (no model
    code) embeds like the source library, and the card says where the model came from."""
    from mmjax import export as export_lib
    workdir, out = tmp_path / "clip", tmp_path / "export"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--data",
                 str(smoke_dataset)]) == 0
    model = export_lib.load(out)
    ref = np.load(FIXTURES / "hf_clip_io.npz")
    np.testing.assert_allclose(model.embed_image(ref["pixel_values"].transpose(0, 2, 3, 1)),
                               ref["image_embeds"], atol=1e-5)
    info = json.loads((out / "export.json").read_text())
    assert "(x - mean) / std per channel" in info["modalities"]["image"]["preprocessing"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "Imported with `mmjax import`" in card and "## Training data" not in card


def test_import_at_another_image_size(tmp_path):
    from mmjax.train.checkpoint import read_fields
    workdir = tmp_path / "clip"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--image-size", "48", "--workdir",
                 str(workdir)]) == 0
    assert config_lib.read(workdir / "config.json").data.image_size == 48
    stored, _ = read_fields(workdir / "checkpoints", ("params",))
    assert stored["params"]["encoders_image"]["pos_embed"]["pos"].shape == (37, 48)


def test_siglip_exports_to_hugging_face_bit_for_bit(tmp_path):
    folder = tmp_path / "siglip"
    shutil.copytree(FIXTURES / "hf_siglip", folder)
    _tokenizer(folder / "tokenizer.json", {"<pad>": 0, "</s>": 1}, "$A </s>")
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "</s>"}))
    workdir, out = tmp_path / "w", tmp_path / "hf"
    assert main(["import", "--from", "hf", str(folder), "--workdir", str(workdir)]) == 0
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--format", "hf"]) == 0
    _assert_same_tensors(out / "model.safetensors",
                         FIXTURES / "hf_siglip" / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "siglip" and config["text_config"]["pad_token_id"] == 1
    assert main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "oc"),
                 "--format", "open_clip"]) == 2  # open_clip has no SigLIP layout here


def test_a_model_trained_with_clips_options_goes_out_and_back_bit_for_bit(tmp_path,
                                                                          smoke_dataset):
    """Not only imports: a model mmjax trained (grey 32 px radiographs, its own tokenizer)
    exports as a CLIPModel folder that imports back to the same parameters."""
    from mmjax.train.checkpoint import read_fields
    cfg = tiny_config(smoke_dataset)
    image, text = cfg.model.image, cfg.model.text
    image.pre_norm = image.cls_position = True
    image.patch_bias = False
    text.pool, text.causal = "last", True
    for tower in (image, text):
        tower.activation, tower.layer_norm_eps = "quick_gelu", 1e-5
    cfg.data.image_mean, cfg.data.image_std = (0.5,), (0.25,)
    cfg.train.num_steps, cfg.train.batch_size = 2, 16
    train(cfg, tmp_path / "run", progress=False, evaluate=False)
    assert main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "hf"),
                 "--format", "hf"]) == 0
    back = clip.from_hf(tmp_path / "hf")
    trained_params, _ = read_fields(tmp_path / "run" / "checkpoints", ("params",))
    _assert_same_params(back.params, trained_params["params"])
    assert back.channels == 1 and back.image_size == 32


def test_the_imports_finetune_experiment_trains_lit(tmp_path, smoke_dataset):
    """`mmjax train --config DIR/finetune.py`: the imported towers start it, the image tower
    stays locked (LiT), the text tower moves."""
    from mmjax.train.checkpoint import read_fields
    workdir, run = tmp_path / "clip", tmp_path / "lit"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    assert main(["train", "--no-progress", "--config", str(workdir / "finetune.py"),
                 "--workdir", str(run), "--set", f"data.path={smoke_dataset}", "--set",
                 "train.num_steps=2", "--set", "train.batch_size=16", "--set",
                 "eval.evaluators=[]"]) == 0
    before, _ = read_fields(workdir / "checkpoints", ("params",))
    after, _ = read_fields(run / "checkpoints", ("params",))
    b, a = (traverse_util.flatten_dict(x["params"]) for x in (before, after))
    image = [k for k in b if k[0] == "encoders_image"]
    text = [k for k in b if k[0] == "encoders_report"]
    assert all(np.array_equal(a[k], b[k]) for k in image)
    assert any(not np.array_equal(a[k], b[k]) for k in text)


def test_a_big_vision_siglip_imports_and_exports_as_a_siglipmodel(tmp_path):
    """big_vision .npz in, Hugging Face SiglipModel out, the same parameters."""
    tokenizer = _tokenizer(tmp_path / "tokenizer.json", {"<pad>": 0, "</s>": 1}, "$A </s>")
    workdir = tmp_path / "siglip"
    assert main(["import", "--from", "big_vision", str(FIXTURES / "big_vision_siglip.npz"),
                 "--tokenizer", str(tokenizer), "--workdir", str(workdir)]) == 0
    assert config_lib.read(workdir / "config.json").objectives.contrastive_loss == "sigmoid"
    assert main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "hf"),
                 "--format", "hf"]) == 0
    _assert_same_params(siglip.from_hf(tmp_path / "hf").params,
                        big_vision.from_npz(FIXTURES / "big_vision_siglip.npz").params)


def test_the_sources_resize_filter_and_normalisation_travel_in_and_out(tmp_path, capsys):
    """preprocessor_config.json's resample (PIL's number) and mean/std become the run's
    data.image_*; the HF export writes them back; open_clip's preprocess_cfg likewise."""
    folder = tmp_path / "clip"
    shutil.copytree(FIXTURES / "hf_clip", folder)
    processor = {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "resample": 2}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    tokenizer = str(_clip_tokenizer(tmp_path))
    workdir = tmp_path / "w"
    assert main(["import", "--from", "hf", str(folder), "--tokenizer", tokenizer,
                 "--workdir", str(workdir)]) == 0
    data = config_lib.read(workdir / "config.json").data
    assert (data.image_mean, data.image_std, data.image_interpolation) == (
        (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear")
    assert main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "hf"),
                 "--format", "hf"]) == 0
    written = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert {key: written[key] for key in processor} == processor

    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "resample": 9}))
    capsys.readouterr()
    assert main(["import", "--from", "hf", str(folder), "--tokenizer", tokenizer,
                 "--workdir", str(tmp_path / "bad")]) == 2
    assert f"{folder / 'preprocessor_config.json'}: resample 9" in capsys.readouterr().err

    spec = json.loads((FIXTURES / "open_clip_vit.json").read_text())
    config = tmp_path / "open_clip.json"
    for interpolation, code in (("bilinear", 0), ("random", 2)):
        spec["preprocess_cfg"] = {"interpolation": interpolation}
        config.write_text(json.dumps(spec))
        assert main(["import", "--from", "open_clip", str(FIXTURES / "open_clip_vit.safetensors"),
                     "--config", str(config), "--tokenizer", tokenizer, "--workdir",
                     str(tmp_path / interpolation)]) == code
    assert "interpolation 'random' is not one mmjax applies" in capsys.readouterr().err
    cfg = config_lib.read(tmp_path / "bilinear" / "config.json")
    assert cfg.data.image_interpolation == "bilinear"
    assert cfg.data.image_mean[0] == 0.48145466  # none given: OpenAI CLIP's


def test_a_filter_open_clip_lacks_is_refused_before_anything_is_written(tmp_path, capsys):
    workdir, out = tmp_path / "clip", tmp_path / "oc"
    assert main(["import", "--from", "hf", str(FIXTURES / "hf_clip"), "--tokenizer",
                 str(_clip_tokenizer(tmp_path)), "--workdir", str(workdir)]) == 0
    cfg = config_lib.read(workdir / "config.json")
    cfg.data.image_interpolation = "lanczos"
    config_lib.save(cfg, workdir / "config.json")
    capsys.readouterr()
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--format",
                 "open_clip"]) == 2
    assert "open_clip resizes with bicubic or bilinear" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", "--workdir", str(workdir), "--out", str(out), "--format", "hf"]) == 0
    assert json.loads((out / "preprocessor_config.json").read_text())["resample"] == 1
