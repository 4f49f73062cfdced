import numpy as np
import pytest

from mmjax.data import tokenizer as tokenizer_lib
from mmjax.data.tokenizer import CLS_ID, PAD_ID, SEP_ID, UNK_ID

REPORTS = [
    "FINDINGS: No pleural effusion. The heart is enlarged.",
    "FINDINGS: Small left pleural effusion. No pneumothorax.",
    "IMPRESSION: Normal chest radiograph.",
] * 3


def test_vocabulary_is_reproducible_and_saved(tmp_path):
    a = tokenizer_lib.train(REPORTS, 200)
    b = tokenizer_lib.train(list(reversed(REPORTS)), 200)
    assert a.to_str() == b.to_str()
    a.save(str(tmp_path / "tok.json"))
    loaded = tokenizer_lib.load(tmp_path / "tok.json")
    assert loaded.encode(REPORTS[0]).ids == a.encode(REPORTS[0]).ids


def test_encoding_frames_pads_and_masks():
    tok = tokenizer_lib.train(REPORTS, 200)
    encoded = tokenizer_lib.encode(tok, REPORTS[:2], max_len=32)
    assert encoded.ids.dtype == np.int32 and encoded.ids.shape == (2, 32)
    assert (encoded.ids[:, 0] == CLS_ID).all()
    for row, mask in zip(encoded.ids, encoded.mask, strict=True):
        length = mask.sum()
        assert row[length - 1] == SEP_ID and (row[length:] == PAD_ID).all()
    assert encoded.num_truncated == 0


def test_truncation_is_counted_and_keeps_the_end_marker():
    tok = tokenizer_lib.train(REPORTS, 200)
    encoded = tokenizer_lib.encode(tok, REPORTS[:3], max_len=6)
    assert encoded.num_truncated == 3
    assert (encoded.ids[:, -1] == SEP_ID).all() and encoded.mask.all()


def test_unseen_words_fall_back_to_characters_not_unknown():
    tok = tokenizer_lib.train(REPORTS, 200)
    ids = tok.encode("cardiac effusion").ids
    assert UNK_ID not in ids
    assert tok.decode(ids) == "cardiac effusion"


def test_vocab_size_below_the_character_set_is_an_error():
    with pytest.raises(ValueError, match="vocab_size 10"):
        tokenizer_lib.train(REPORTS, 10)


def test_bert_vocab_txt_keeps_its_own_ids(tmp_path):
    words = ["heart", "is", "enlarged", "##s", "."]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + \
        ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = tokenizer_lib.load(tmp_path / "vocab.txt")
    encoded = tokenizer_lib.encode(tok, ["The heart is enlarged."], max_len=8)
    assert encoded.ids[0].tolist() == [101, 100, 104, 105, 106, 108, 102, 0]
    assert encoded.mask[0].tolist() == [True] * 7 + [False]


def test_vocab_txt_without_special_tokens_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]'"):
        tokenizer_lib.load(tmp_path / "vocab.txt")


def _pretrained_style(kind: str):
    """A tokenizer.json as CLIP (BPE, <|startoftext|> ... <|endoftext|>, no pad token) or
    SigLIP (... </s>, padded with </s>, a <pad> token it does not pad with) ship it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    words = ["heart", "is", "enlarged", "."]
    if kind == "clip":
        specials = ["<|startoftext|>", "<|endoftext|>"]
        vocab = {w: i for i, w in enumerate([*words, *specials])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="heart"))
        tok.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>",
            special_tokens=[(t, vocab[t]) for t in specials])
    else:
        vocab = {w: i for i, w in enumerate(["<pad>", "</s>", *words])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="heart"))
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", 1)])
        tok.enable_padding(pad_id=1, pad_token="</s>", length=8)
    tok.add_special_tokens([t for t in vocab if t.startswith("<")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_a_clip_style_tokenizer_keeps_its_tokens_and_pads_with_its_end_token(tmp_path):
    path = tmp_path / "tokenizer.json"
    _pretrained_style("clip").save(str(path))
    tok = tokenizer_lib.load(path)
    roles = tokenizer_lib.specials(tok)
    assert (roles.start, roles.end, roles.pad, roles.mask) == (4, 5, 5, None)
    encoded = tokenizer_lib.encode(tok, ["heart is enlarged .", "heart is enlarged . ."], 6)
    assert encoded.ids.tolist() == [[4, 0, 1, 2, 3, 5], [4, 0, 1, 2, 3, 5]]
    assert encoded.num_truncated == 1  # the second lost a '.', kept its end token
    short = tokenizer_lib.encode(tok, ["heart"], 5)
    assert short.ids.tolist() == [[4, 0, 5, 5, 5]] and short.mask.sum() == 3


def test_a_siglip_style_tokenizer_pads_with_its_configured_pad(tmp_path):
    path = tmp_path / "tokenizer.json"
    _pretrained_style("siglip").save(str(path))
    tok = tokenizer_lib.load(path)
    roles = tokenizer_lib.specials(tok)
    assert (roles.start, roles.end, roles.pad) == (None, 1, 1)  # not <pad> = 0
    encoded = tokenizer_lib.encode(tok, ["heart is"], 5)
    assert encoded.ids.tolist() == [[2, 3, 1, 1, 1]]
    assert encoded.mask.tolist() == [[True, True, True, False, False]]  # its padding cut


def test_mlm_needs_a_tokenizer_with_a_mask_token(tmp_path):
    from mmjax.config import Config, ConfigError
    from mmjax.nn import build
    path = tmp_path / "tokenizer.json"
    _pretrained_style("clip").save(str(path))
    vocab = build.vocab(tokenizer_lib.load(path))
    assert vocab.mask_id is None and set(vocab.special_ids) == {4, 5}
    cfg = Config()
    cfg.objectives.mlm = 1.0
    with pytest.raises(ConfigError, match="objectives.mlm needs a tokenizer with a mask"):
        build.define(cfg, vocab, 0)


def test_clip_bpe_gives_open_clips_ids():
    """transformers' CLIP tokenizer.json (at a reduced vocabulary of open_clip's own merges)
    through encode() gives open_clip.tokenize's ids: [SOT] tokens [EOT], the long text cut
    with its last id made [EOT], padded with 0 once an import sets open_clip's padding
    (fixture: tools/make_interop_fixtures.py, see tests/test_interop.py)."""
    import json
    from pathlib import Path
    fixtures = Path(__file__).parent / "data" / "interop"
    texts = json.loads((fixtures / "manifest.json").read_text())["clip_tokenizer"]["texts"]
    want = np.load(fixtures / "clip_tokenizer_io.npz")["ids"]
    tok = tokenizer_lib.load(fixtures / "clip_tokenizer.json")
    tok.enable_padding(pad_id=0, pad_token=tok.id_to_token(0))  # what `mmjax import` keeps
    encoded = tokenizer_lib.encode(tok, texts, want.shape[1])
    np.testing.assert_array_equal(encoded.ids, want)
    assert encoded.mask.sum(axis=1).tolist() == (want != 0).sum(axis=1).tolist()
    assert encoded.num_truncated == 2  # the second and third texts, cut keeping [EOT]
