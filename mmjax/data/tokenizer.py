"""WordPiece tokenizer for reports, with its vocabulary built from the training corpus;
or a pretrained model's own tokenizer (BERT's vocab.txt, CLIP's BPE or SigLIP's
SentencePiece as a tokenizer.json), which keeps that model's ids.

Built vocabularies start [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. Every encoded text
is what the tokenizer's post-processor makes of it ([CLS] ... [SEP]; <|startoftext|> ...
<|endoftext|>; ... </s>), padded with its pad token; texts longer than the context are
cut (keeping the end token) and counted, so a too-short context is visible, not silent.
"""

import collections
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mmjax import storage
from mmjax.errors import ConfigError

DATASET_FILE = "tokenizer.json"  # the tokenizer kept next to a dataset's shards
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(lowercase=True)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()


def train(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A WordPiece vocabulary of every character plus the most frequent words.

    Built by counting rather than by `tokenizers`' trainer, whose output changes from
    run to run (hash-map order breaks ties); a vocabulary must be reproducible so
    that independently started runs and evaluations agree. Unseen words still
    tokenize, into characters.
    """
    normalizer, pre_tokenizer = _normalizer(), _pre_tokenizer()
    counts = collections.Counter(
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    chars = sorted({char for word in counts for char in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]
    if vocab_size < len(vocab):
        raise ValueError(
            f"vocab_size {vocab_size} is below the {len(vocab)} special and character tokens"
        )
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: vocab_size - len(vocab)]
    return _bert_style(
        models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    )


def _bert_style(model: models.Model) -> Tokenizer:
    """Lower-casing BERT normalisation, word/punctuation splitting, [CLS] ... [SEP]."""
    tokenizer = Tokenizer(model)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # never split; skipped when decoding
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return tokenizer


def save_for_dataset(directory: str | Path, reports: Sequence[str], vocab_size: int) -> None:
    """Builds the tokenizer from a dataset's train reports and keeps it with the shards."""
    if reports:
        train(reports, vocab_size).save(str(Path(directory) / DATASET_FILE))


def load(path: str | Path, lower_case: bool = True) -> Tokenizer:
    """A saved tokenizer.json, a BERT-family WordPiece vocab.txt (one token a line) or a
    SigLIP SentencePiece spiece.model (`lower_case`: SiglipTokenizer's do_lower_case). A
    file that is none of them, or lacks a special token, is one ConfigError naming it."""
    path = storage.path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    if path.suffix == ".model":
        from mmjax.data import spm  # SentencePiece's protobuf: not the export loader's

        return spm.siglip_tokenizer(path, lower_case)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a tokenizer (not UTF-8 text: {e})") from None
    if path.suffix == ".txt":  # one token a line, as WordPiece.read_file reads it
        vocab = {token.rstrip(): i for i, token in enumerate(text.splitlines())}
        _check_specials(vocab, path)
        return _bert_style(models.WordPiece(vocab, unk_token="[UNK]"))
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as e:  # noqa: BLE001 - the library raises bare Exception
        raise ConfigError(f"{path}: not a tokenizer.json the tokenizers library can read "
                          f"({e})") from None
    # Shipped tokenizer.json files may truncate on their own; encode() does (and counts)
    # it. A padding setting is kept: it names the pad token (specials()).
    tokenizer.no_truncation()
    try:
        specials(tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return tokenizer


def _check_specials(vocab, path) -> None:
    """A BERT vocab.txt must hold every special token ([PAD], [SEP], [MASK], ...)."""
    if missing := [t for t in SPECIAL_TOKENS if t not in vocab]:
        raise ConfigError(f"{path}: vocabulary lacks the special tokens {missing}")


PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>")
MASK_NAMES = ("[MASK]", "<mask>")


@dataclasses.dataclass(frozen=True)
class Specials:
    """The special tokens by role: what encode(), MLM and report generation need."""

    pad: int
    end: int | None  # the last token the post-processor adds: [SEP], <|endoftext|>, </s>
    start: int | None  # the first one: [CLS], <|startoftext|>; SigLIP has none
    mask: int | None  # [MASK]: only MLM needs one

    @property
    def ids(self) -> tuple[int, ...]:
        """Every special id, each once: never masked, never a generation target."""
        return tuple(dict.fromkeys(i for i in (self.pad, self.end, self.start, self.mask)
                                   if i is not None))


def specials(tokenizer: Tokenizer) -> Specials:
    """The roles, read from the tokenizer itself: start and end are the tokens its
    post-processor puts around a text; pad is its padding token when it has one configured
    (SigLIP pads with </s>), else [PAD] / <pad> by name, else the end token (CLIP)."""
    probe = tokenizer.encode("a")
    marked = [i for i, special in zip(probe.ids, probe.special_tokens_mask, strict=True)
              if special]
    leading = probe.special_tokens_mask[0] if probe.ids else 0
    trailing = probe.special_tokens_mask[-1] if probe.ids else 0
    start = marked[0] if leading else None
    end = marked[-1] if trailing else None
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    padding = tokenizer.padding
    named = next((vocab[n] for n in PAD_NAMES if n in vocab), None)
    pad = padding["pad_id"] if padding else named if named is not None else end
    if pad is None:
        raise ConfigError("the tokenizer has no pad token ([PAD], <pad>, a padding setting "
                          "or an end token)")
    return Specials(pad, end, start, next((vocab[n] for n in MASK_NAMES if n in vocab), None))


@dataclasses.dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # int32 [N, L]
    mask: np.ndarray  # bool [N, L], True on real tokens
    num_truncated: int


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int,
           roles: Specials | None = None) -> Encoded:
    """`roles`: specials(tokenizer), given by callers that encode one text at a time (the
    input pipeline), since finding them tokenizes a probe."""
    roles = roles or specials(tokenizer)
    ids = np.full((len(texts), max_len), roles.pad, np.int32)
    mask = np.zeros((len(texts), max_len), bool)
    num_truncated = 0
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        tokens = encoding.ids[: sum(encoding.attention_mask)]  # without any padding
        if len(tokens) > max_len:
            num_truncated += 1
            end = [] if roles.end is None else [roles.end]
            tokens = tokens[: max_len - len(end)] + end
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = True
    return Encoded(ids, mask, num_truncated)
