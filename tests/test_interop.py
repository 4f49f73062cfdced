"""CLIP and SigLIP checkpoints from Hugging Face and open_clip give the reference library's
embeddings and logits (float32, <= 1e-4), tensor for tensor, without torch.

The fixtures are random-weight models written once by the reference libraries:
`/tmp/torchvenv/bin/python tools/make_interop_fixtures.py --out tests/data/interop` in a
venv with torch==2.13.0 (CPU), transformers==5.24.0, open_clip_torch==3.3.0 and
timm==1.0.31 (the script's docstring says how to make it).
"""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mmjax.interop import big_vision, blocks, clip, positions, siglip, timm_bert
from mmjax.interop import tensors as t
from mmjax.nn.model import MultimodalModel

FIXTURES = Path(__file__).parent / "data" / "interop"
TOLERANCE = 1e-4


def _model(imported: blocks.Imported, vocab: int):
    """The mmjax model the import describes, initialised, with the imported towers in."""
    model = MultimodalModel(imported.model, vocab, ("image", "report"))
    size, context = imported.image_size, imported.model.text.max_positions
    batch = {"image": jnp.zeros((1, size, size, imported.channels)),
             "text": jnp.zeros((1, context), jnp.int32),
             "text_mask": jnp.ones((1, context), bool)}
    params = nn.meta.unbox(jax.jit(lambda b: model.init(
        jax.random.key(0), b, method=model.contrastive))(batch)["params"])
    return model, t.merge(params, imported.params)


def _embeddings(model, params, pixels_nchw, ids, mask):
    variables = {"params": params}
    images = jnp.asarray(pixels_nchw.transpose(0, 2, 3, 1))
    image = model.apply(variables, images, method=model.embed_image)
    text = model.apply(variables, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool),
                       method=model.embed_text)
    scale = model.apply(variables, method=model.scale)
    return np.asarray(image), np.asarray(text), float(scale)


def _through_eot(ids: np.ndarray) -> np.ndarray:
    """open_clip's text has no mask: every token up to the end-of-text token (the argmax)."""
    return np.arange(ids.shape[1])[None] <= ids.argmax(axis=1)[:, None]


def test_hugging_face_clip_matches_transformers():
    ref = np.load(FIXTURES / "hf_clip_io.npz")
    imported = clip.from_hf(FIXTURES / "hf_clip")
    model, params = _model(imported, 512)
    image, text, scale = _embeddings(model, params, ref["pixel_values"], ref["input_ids"],
                                     ref["attention_mask"])
    np.testing.assert_allclose(image, ref["image_embeds"], atol=TOLERANCE)
    np.testing.assert_allclose(text, ref["text_embeds"], atol=TOLERANCE)
    np.testing.assert_allclose(scale * image @ text.T, ref["logits_per_image"],
                               atol=TOLERANCE * 100)
    assert imported.model.image.activation == "quick_gelu"


def test_open_clip_matches_open_clip():
    ref = np.load(FIXTURES / "open_clip_vit_io.npz")
    imported = clip.from_open_clip(FIXTURES / "open_clip_vit.safetensors",
                                   FIXTURES / "open_clip_vit.json")
    model, params = _model(imported, 512)
    image, text, scale = _embeddings(model, params, ref["pixel_values"], ref["text"],
                                     _through_eot(ref["text"]))
    np.testing.assert_allclose(image, ref["image_features_normalized"], atol=TOLERANCE)
    np.testing.assert_allclose(text, ref["text_features_normalized"], atol=TOLERANCE)
    np.testing.assert_allclose(scale, np.exp(ref["logit_scale"]), rtol=1e-6)


def test_every_tower_parameter_comes_from_the_checkpoint():
    """Nothing in the image and report towers or their projections is left at its random
    initialisation: the import covers them exactly."""
    imported = clip.from_hf(FIXTURES / "hf_clip")
    model = MultimodalModel(imported.model, 512, ("image", "report"))
    batch = {"image": jnp.zeros((1, 32, 32, 3)), "text": jnp.zeros((1, 16), jnp.int32),
             "text_mask": jnp.ones((1, 16), bool)}
    shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b,
                                                 method=model.contrastive), batch)
    towers = {k for k in traverse_util.flatten_dict(shapes["params"])
              if k[0] in ("encoders_image", "encoders_report", "proj_image", "proj_report",
                          "logit_scale")}
    assert towers == set(traverse_util.flatten_dict(imported.params))


def test_full_size_checkpoints_map_one_to_one():
    """The real ViT-B/16 layouts (names and shapes, recorded by the fixture script):
    nothing left over, nothing missing."""
    maps = json.loads((FIXTURES / "fullsize_keys.json").read_text())
    hf = maps["hf_clip_vit_base_patch16"]
    cfg = clip.model_config(blocks.Tower(768, 12, 12, 3072), blocks.Tower(512, 12, 8, 2048), 16,
                            77, 512, "quick_gelu", 1e-5, 4.6)
    _assert_maps(clip._entries(cfg, 3, 224, clip.HF_NAMES), hf, blocks.HF_IGNORED)
    _assert_maps(clip._entries(cfg, 3, 224, clip.OPEN_CLIP_NAMES), maps["open_clip_ViT-B-16"],
                 clip.OPEN_CLIP_IGNORED)


def _assert_maps(entries, shapes: dict, ignored):
    """assemble() raises on any tensor missing, left over or of another shape."""
    tensors = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    tree = t.assemble(tensors, entries, "full-size", ignored)
    assert tree["encoders_image"]["pos_embed"]["pos"].shape == (197, 768)


def test_bad_checkpoints_are_one_error_naming_the_tensors(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text((FIXTURES / "hf_clip" / "config.json").read_text())
    weights = load_file(str(FIXTURES / "hf_clip" / "model.safetensors"))
    broken = {k: v for k, v in weights.items() if "layers.1.mlp.fc2" not in k}
    broken["text_model.extra.weight"] = np.zeros(3, np.float32)
    broken["visual_projection.weight"] = np.zeros((31, 48), np.float32)
    save_file(broken, str(folder / "model.safetensors"))
    with pytest.raises(t.InteropError) as error:
        clip.from_hf(folder)
    message = str(error.value)
    assert "missing: text_model.encoder.layers.1.mlp.fc2.bias" in message
    assert "unexpected: text_model.extra.weight" in message
    assert "other shapes: visual_projection.weight (31, 48) (expected (32, 48))" in message

    (folder / "model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(t.InteropError, match="pickled checkpoint, which mmjax never loads"):
        t.read_safetensors(folder / "model.bin")
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "relu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(t.InteropError, match="different activations|'relu' is not supported"):
        clip.from_hf(folder)


def test_hugging_face_siglip_matches_transformers():
    """The MAP head, the text head's bias, padding attended and pooled at the last
    position, and the sigmoid logits' scale and bias."""
    ref = np.load(FIXTURES / "hf_siglip_io.npz")
    imported = siglip.from_hf(FIXTURES / "hf_siglip")
    model, params = _model(imported, 512)
    ids = ref["input_ids"]
    image, text, scale = _embeddings(model, params, ref["pixel_values"], ids, ids != 1)
    np.testing.assert_allclose(image, ref["image_embeds"], atol=TOLERANCE)
    np.testing.assert_allclose(text, ref["text_embeds"], atol=TOLERANCE)
    bias = float(params["logit_bias"])
    np.testing.assert_allclose(scale * image @ text.T + bias, ref["logits_per_image"],
                               atol=TOLERANCE * 100)


def test_full_size_siglip_maps_one_to_one():
    maps = json.loads((FIXTURES / "fullsize_keys.json").read_text())
    for name, size in (("hf_siglip_so400m_patch14_384", 384), ("hf_medsiglip_448", 448)):
        so400m = blocks.Tower(1152, 27, 16, 4304)
        cfg = siglip.model_config(so400m, so400m, 14, 64, "gelu_pytorch_tanh", 1e-6, 4.7)
        tensors = {n: np.zeros(s, np.float32) for n, s in maps[name].items()}
        tree = t.assemble(tensors, siglip._entries(cfg, 3, size), name, blocks.HF_IGNORED)
        assert tree["encoders_image"]["pos_embed"]["pos"].shape == ((size // 14) ** 2, 1152)


def test_open_clip_timm_bert_matches_open_clip(tmp_path):
    """BiomedCLIP's layout: a timm ViT trunk (packed qkv, CLS position row, exact GELU) and
    a BERT text tower pooled at [CLS] through open_clip's MLP projection."""
    ref = np.load(FIXTURES / "open_clip_timm_bert_io.npz")
    spec = json.loads((FIXTURES / "open_clip_timm_bert.json").read_text())
    spec["vision_cfg"]["heads"] = spec["timm_create_model_overrides"]["num_heads"]
    spec["text_cfg"]["heads"] = spec["hf_text_config"]["num_attention_heads"]
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": spec}))
    imported = timm_bert.from_open_clip(FIXTURES / "open_clip_timm_bert.safetensors",
                                        tmp_path / "open_clip_config.json")
    model, params = _model(imported, 512)
    ids = ref["text"]
    image, text, scale = _embeddings(model, params, ref["pixel_values"], ids, ids != 0)
    np.testing.assert_allclose(image, ref["image_features_normalized"], atol=TOLERANCE)
    np.testing.assert_allclose(text, ref["text_features_normalized"], atol=TOLERANCE)
    np.testing.assert_allclose(scale, np.exp(ref["logit_scale"]), rtol=1e-6)


def test_full_size_biomedclip_maps_one_to_one():
    maps = json.loads((FIXTURES / "fullsize_keys.json").read_text())
    tensors = {n: np.zeros(s, np.float32) for n, s in maps["open_clip_biomedclip"].items()}
    spec = {"vision_cfg": {"timm_model_name": "vit_base_patch16_224", "image_size": 224},
            "text_cfg": {"hf_proj_type": "mlp", "context_length": 256}}
    cfg = timm_bert.model_config(tensors, spec, "biomedclip")
    assert (cfg.image.width, cfg.image.depth, cfg.image.num_heads) == (768, 12, 12)
    assert (cfg.text.width, cfg.text.depth, cfg.text.num_heads) == (768, 12, 12)
    assert cfg.embed_dim == 512 and cfg.text.projection_hidden == 640
    tree = t.assemble(tensors, timm_bert._entries(cfg, 3), "biomedclip",
                      (f"{timm_bert.BERT}embeddings.position_ids",))
    assert tree["encoders_report"]["token_embed"]["embedding"].shape == (30522, 768)


@pytest.mark.parametrize("case", ["up", "down", "odd"])
@pytest.mark.parametrize("antialias", [False, True])
def test_position_grids_resize_as_torch_does(case, antialias):
    """F.interpolate bicubic without antialias (transformers) and with it (open_clip, timm),
    growing, shrinking and to an odd size."""
    ref = np.load(FIXTURES / "resample_io.npz")
    grid = ref[f"{case}_in"][0].transpose(1, 2, 0)
    want = ref[f"{case}_bicubic{'_aa' if antialias else ''}"][0].transpose(1, 2, 0)
    got = positions.resize_grid(grid, want.shape[0], antialias)
    np.testing.assert_allclose(got, want, atol=1e-5)
    other = positions.resize_grid(grid, want.shape[0], not antialias)
    assert np.abs(other - want).max() > 1e-3  # the two methods differ: the test can tell


def test_an_import_at_another_image_size_keeps_the_cls_row():
    imported = clip.from_hf(FIXTURES / "hf_clip")
    bigger = positions.at_image_size(imported, 48, antialias=False)
    table = bigger.params["encoders_image"]["pos_embed"]["pos"]
    assert table.shape == (1 + 36, 48) and bigger.image_size == 48
    np.testing.assert_array_equal(table[0], imported.params["encoders_image"]["pos_embed"]
                                  ["pos"][0])
    model, params = _model(bigger, 512)
    image = model.apply({"params": params}, jnp.zeros((1, 48, 48, 3)),
                        method=model.embed_image)
    assert image.shape == (1, 32)
    with pytest.raises(t.InteropError, match="not a multiple of the patch size 8"):
        positions.at_image_size(imported, 50, antialias=False)


def test_big_vision_siglip_matches_big_vision():
    """A SigLIP built and saved by big_vision's own code (two_towers, vit, text_transformer:
    `.venv/bin/python tools/make_big_vision_fixture.py BIG_VISION_CHECKOUT`)."""
    ref = np.load(FIXTURES / "big_vision_siglip_io.npz")
    imported = big_vision.from_npz(FIXTURES / "big_vision_siglip.npz")
    model, params = _model(imported, 512)
    variables = {"params": params}
    image = model.apply(variables, jnp.asarray(ref["images"]), method=model.embed_image)
    ids = jnp.asarray(ref["text"])
    text = model.apply(variables, ids, jnp.ones(ids.shape, bool), method=model.embed_text)
    np.testing.assert_allclose(image, ref["image_embeds"], atol=TOLERANCE)
    np.testing.assert_allclose(text, ref["text_embeds"], atol=TOLERANCE)
    scale = model.apply(variables, method=model.scale)
    np.testing.assert_allclose(scale * image @ text.T + params["logit_bias"], ref["logits"],
                               atol=TOLERANCE * 100)


def test_a_scanned_big_vision_checkpoint_reads_like_an_unrolled_one(tmp_path):
    """Blocks stacked along a leading depth axis (scan=True) give the same parameters."""
    arrays = dict(np.load(FIXTURES / "big_vision_siglip.npz"))
    stacked = {}
    for name, value in arrays.items():
        m = re.match(r"(params/(?:img/Transformer|txt/Encoder_0))/encoderblock_(\d+)/(.*)", name)
        if m:
            stacked.setdefault(f"{m.group(1)}/encoderblock/{m.group(3)}", {})[
                int(m.group(2))] = value
        else:
            stacked[name] = value
    stacked = {k: np.stack([v[i] for i in sorted(v)]) if isinstance(v, dict) else v
               for k, v in stacked.items()}
    np.savez(tmp_path / "scanned.npz", **stacked)
    a = traverse_util.flatten_dict(big_vision.from_npz(tmp_path / "scanned.npz").params)
    b = traverse_util.flatten_dict(big_vision.from_npz(FIXTURES / "big_vision_siglip.npz").params)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
