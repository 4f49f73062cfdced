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
