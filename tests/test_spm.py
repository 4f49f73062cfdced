"""SigLIP's SentencePiece tokenizer read into mmjax gives transformers' SiglipTokenizer ids.

Fixtures (two unigram models, nmt_nfkc as SigLIP's and identity with byte fallback, and
SiglipTokenizer's ids of fixed texts) are written once, in a throwaway venv with the pinned
torch==2.13.0 CPU build and transformers, by
  /tmp/torchvenv/bin/python tools/make_interop_fixtures.py --out tests/data/interop \
      --skip hf_clip open_clip_vit hf_siglip hf_bert open_clip_timm_bert fullsize_keys \
             resample clip_tokenizer
Beyond the fixed texts, seeded random texts are compared with SiglipTokenizer's algorithm
written over the sentencepiece library itself (`_reference_ids`).
"""

import json
import random
import re
import string
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
from safetensors.numpy import load_file, save_file
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from mmjax.cli import main
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.errors import ConfigError

FIXTURES = Path(__file__).parent / "data" / "interop"
MODELS = ("siglip_spiece", "spm_bytes")
EOS = 1  # </s>, also SiglipTokenizer's pad
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["siglip_tokenizer"]
EXPECTED = np.load(FIXTURES / "siglip_tokenizer_io.npz")


@pytest.mark.parametrize("name", MODELS)
def test_fixed_texts_give_siglip_tokenizers_ids(name):
    tok = tokenizer_lib.load(FIXTURES / f"{name}.model")
    want = EXPECTED[f"{name}_ids"]
    encoded = tokenizer_lib.encode(tok, MANIFEST["texts"], want.shape[1])
    np.testing.assert_array_equal(encoded.ids, want)
    full = EXPECTED[f"{name}_full_ids"]
    untruncated = tokenizer_lib.encode(tok, MANIFEST["texts"], full.shape[1])
    np.testing.assert_array_equal(untruncated.ids, full)
    assert encoded.num_truncated == (untruncated.mask.sum(axis=1) > want.shape[1]).sum() > 0
    roles = tokenizer_lib.specials(tok)
    assert (roles.pad, roles.end, roles.start) == (EOS, EOS, None)


def _ids(tok, texts: list[str]) -> list[list[int]]:
    """Each text's ids without the batch's padding."""
    return [e.ids[: sum(e.attention_mask)] for e in tok.encode_batch(texts)]


def _processor(path: Path) -> sentencepiece.SentencePieceProcessor:
    """The processor as SiglipTokenizer makes it: add_dummy_prefix off."""
    proto = model_pb2.ModelProto.FromString(path.read_bytes())
    proto.normalizer_spec.add_dummy_prefix = False
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto.SerializeToString())
    return processor


def _reference_ids(processor, text: str, lower_case: bool) -> list[int]:
    """SiglipTokenizer.tokenize/_tokenize for a text without special tokens: "▁" + text,
    lower-cased, punctuation removed, whitespace collapsed and stripped, encoded after
    "<unk>" (whose pieces are then dropped), </s> appended."""
    text = "\u2581" + text.replace("\u2581", " ")
    text = text.lower() if lower_case else text
    text = text.translate(PUNCTUATION_OUT)
    text = re.sub(r"\s+", " ", text).strip()
    unk_pieces = len(processor.encode("<unk>"))
    return processor.encode("<unk>" + text)[unk_pieces:] + [EOS]


PUNCTUATION_OUT = str.maketrans("", "", string.punctuation)
POOL = (string.ascii_letters + string.digits + string.punctuation + " " * 8 + "\t\n\r\x0b\x0c"
        + "\u00a0\u2003\u3000\u1680\x1c\x85" + "éÉñßÆﬁﬂ½²ℌ" + "ＡＢｃ１！" + "αΩжЖ"
        + "\u2581\u0301\u200b" + "肺心✓🫁")


REWRITTEN_THEN_COMBINING = re.compile("[½²ℌＡＢｃ１！ﬁﬂ]\u0301")


def _random_texts(seed: int, count: int) -> list[str]:
    """Texts from POOL, less the two differences mmjax.data.spm's docstring names."""
    rng = random.Random(seed)
    texts = ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 40))) for _ in range(count)]
    return [t for t in texts if "<unk>" not in t and "</s>" not in t
            and not REWRITTEN_THEN_COMBINING.search(t.translate(PUNCTUATION_OUT))]


@pytest.mark.parametrize("lower_case", [True, False])
@pytest.mark.parametrize("name", MODELS)
def test_random_texts_match_siglip_tokenizers_algorithm(name, lower_case):
    path = FIXTURES / f"{name}.model"
    tok = tokenizer_lib.load(path, lower_case)
    processor = _processor(path)
    texts = _random_texts(seed=len(name) + lower_case, count=400)
    got = _ids(tok, texts)
    want = [_reference_ids(processor, text, lower_case) for text in texts]
    mismatched = [(t, g, w) for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not mismatched, mismatched[:3]


def test_the_tokenizer_survives_its_tokenizer_json(tmp_path):
    """The workdir keeps a tokenizer.json: the precompiled character map goes with it."""
    tok = tokenizer_lib.load(FIXTURES / "siglip_spiece.model")
    (tmp_path / "tokenizer.json").write_text(tok.to_str())
    again = tokenizer_lib.load(tmp_path / "tokenizer.json")
    texts = MANIFEST["texts"] + _random_texts(seed=7, count=100)
    assert _ids(again, texts) == _ids(tok, texts)


def _bpe_model(path: Path) -> Path:
    proto = model_pb2.ModelProto.FromString((FIXTURES / "siglip_spiece.model").read_bytes())
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not a protobuf \x00\x01", "not a SentencePiece model"),
    (b"", "not a SentencePiece model"),
    (None, "a BPE SentencePiece model"),
])
def test_a_file_that_is_not_a_siglip_model_is_refused_naming_it(tmp_path, content, message):
    path = tmp_path / "spiece.model"
    if content is None:
        _bpe_model(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"{re.escape(str(path))}: {message}"):
        tokenizer_lib.load(path)


def _siglip_folder(folder: Path, vocab_size: int) -> None:
    """The SiglipModel fixture as the HF hub ships SigLIP: spiece.model, no tokenizer.json,
    its text embedding cut to the SentencePiece vocabulary."""
    folder.mkdir()
    config = json.loads((FIXTURES / "hf_siglip" / "config.json").read_text())
    config["text_config"]["vocab_size"] = vocab_size
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(FIXTURES / "hf_siglip" / "model.safetensors")
    key = "text_model.embeddings.token_embedding.weight"
    tensors[key] = np.ascontiguousarray(tensors[key][:vocab_size])
    save_file(tensors, folder / "model.safetensors")
    (folder / "spiece.model").write_bytes((FIXTURES / "siglip_spiece.model").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "</s>", "do_lower_case": False, "tokenizer_class": "SiglipTokenizer"}))


def test_an_hf_siglip_folder_imports_with_its_spiece_model(tmp_path):
    size = len(model_pb2.ModelProto.FromString(
        (FIXTURES / "siglip_spiece.model").read_bytes()).pieces)
    folder = tmp_path / "siglip"
    _siglip_folder(folder, size)
    workdir = tmp_path / "w"
    assert main(["import", "--from", "hf", str(folder), "--workdir", str(workdir)]) == 0
    tok = tokenizer_lib.load(workdir / "tokenizer.json")
    texts = MANIFEST["texts"]
    processor = _processor(folder / "spiece.model")
    # do_lower_case False, as the folder's tokenizer_config.json says
    assert _ids(tok, texts) == [_reference_ids(processor, text, lower_case=False) for text in texts]
    assert tok.encode("Left").ids != tok.encode("left").ids
    assert json.loads((workdir / "imported.json").read_text())["tokenizer"].endswith(
        "spiece.model")
