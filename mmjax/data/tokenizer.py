"""WordPiece tokenizer trained on the corpus reports (Hugging Face `tokenizers`).

Ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. Every encoded report is
[CLS] ... [SEP], padded with [PAD]; reports longer than the context are cut
(keeping [SEP]) and counted, so a too-short context is visible, not silent.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))


def train(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)]
    )
    return tokenizer


def load(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))


@dataclasses.dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # int32 [N, L]
    mask: np.ndarray  # bool [N, L], True on real tokens
    num_truncated: int


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> Encoded:
    ids = np.full((len(texts), max_len), PAD_ID, np.int32)
    num_truncated = 0
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        tokens = encoding.ids
        if len(tokens) > max_len:
            num_truncated += 1
            tokens = tokens[: max_len - 1] + [SEP_ID]
        ids[row, : len(tokens)] = tokens
    return Encoded(ids, ids != PAD_ID, num_truncated)
