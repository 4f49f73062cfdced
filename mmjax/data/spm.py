"""SigLIP's SentencePiece tokenizer (`spiece.model`) as a `tokenizers` one, giving the ids
transformers' SiglipTokenizer gives, so that an imported SigLIP keeps its vocabulary and
mmjax keeps one tokenizer format (tokenizer.json) for training, evaluation and export.

SiglipTokenizer lower-cases, drops ASCII punctuation, collapses whitespace, prepends "▁",
runs SentencePiece's own normaliser (the model's precompiled character map, extra
whitespace removed) and unigram segmentation, and appends </s>; it pads with </s>. Each
step is a `tokenizers` normaliser here, in the same order. Two known differences: a text
holding a literal special token ("</s>") is split at it by both, but SiglipTokenizer does
not prepend "▁" to the part after it; and a combining mark right after a character the
map rewrites ("½" + U+0301) is dropped (`tokenizers`' Precompiled maps a grapheme by its
longest mapped prefix), where SentencePiece keeps it.
"""

import string
from pathlib import Path

from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from mmjax.errors import ConfigError

SPACE = "\u2581"  # SentencePiece's word-boundary mark "▁"
UNIGRAM = model_pb2.TrainerSpec.UNIGRAM
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (
    model_pb2.ModelProto.SentencePiece.Type.Value(name)
    for name in ("NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"))
END, PAD = "</s>", "</s>"  # SiglipTokenizer's eos and pad tokens
# str.isspace() characters (all below U+3001): Python's \s, wider than Rust's (\x1c-\x1f)
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def read(path: Path) -> model_pb2.ModelProto:
    """The model proto; a file that is not one, or a model that is not unigram (SigLIP's
    and T5's are; a BPE one would need other segmentation), is a ConfigError naming it."""
    try:
        proto = model_pb2.ModelProto.FromString(path.read_bytes())
    except DecodeError as e:
        raise ConfigError(f"{path}: not a SentencePiece model ({e})") from None
    if not proto.pieces:
        raise ConfigError(f"{path}: not a SentencePiece model (no pieces)")
    if proto.trainer_spec.model_type != UNIGRAM:
        kind = model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
        raise ConfigError(f"{path}: a {kind} SentencePiece model; mmjax reads unigram ones "
                          "(SigLIP's)")
    return proto


def siglip_tokenizer(path: str | Path, lower_case: bool = True) -> Tokenizer:
    """`lower_case`: SiglipTokenizer's do_lower_case (its tokenizer_config.json's)."""
    path = Path(path)
    proto = read(path)
    pieces = proto.pieces
    names = {piece.piece: i for i, piece in enumerate(pieces)}
    if END not in names:
        raise ConfigError(f"{path}: the SentencePiece model has no {END} piece")
    unk = next((i for i, piece in enumerate(pieces) if piece.type == UNKNOWN), None)
    tokenizer = Tokenizer(models.Unigram(
        [(piece.piece, piece.score) for piece in pieces], unk_id=unk,
        byte_fallback=any(piece.type == BYTE for piece in pieces)))
    tokenizer.add_special_tokens([
        AddedToken(piece.piece, lstrip=True, rstrip=True, normalized=False, special=True)
        for piece in pieces if piece.type in (CONTROL, UNKNOWN)])
    tokenizer.add_tokens([AddedToken(piece.piece, normalized=False)
                          for piece in pieces if piece.type == USER_DEFINED])
    tokenizer.normalizer = _normalizer(proto.normalizer_spec, lower_case)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE,
                                                       prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "),
                                           decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {END}", special_tokens=[(END, names[END])])
    tokenizer.enable_padding(pad_id=names[PAD], pad_token=PAD)
    return tokenizer


def _normalizer(spec, lower_case: bool) -> normalizers.Normalizer:
    """SiglipTokenizer's canonicalisation, then SentencePiece's normaliser on the result
    (with add_dummy_prefix off, as SiglipTokenizer sets it: it prepends "▁" itself)."""
    punctuation = Regex(_char_class(string.punctuation))
    whitespace = Regex(_char_class(PY_WHITESPACE) + "+")  # Python's \\s, which re uses
    steps = [normalizers.Replace(SPACE, " ")]
    steps += [normalizers.Lowercase()] if lower_case else []
    steps += [normalizers.Replace(punctuation, ""), normalizers.Replace(whitespace, " "),
              normalizers.Replace(Regex(" +$"), "")]
    charmap = spec.precompiled_charsmap and normalizers.Precompiled(spec.precompiled_charsmap)
    if charmap and charmap.normalize_str(SPACE) != SPACE:
        # SiglipTokenizer's leading "▁" is a space to this map (nmt_nfkc's maps "▁" to " "),
        # so it goes in as one: the map would take "▁" and a following combining mark as one
        # grapheme and drop the mark, which SentencePiece keeps.
        steps += [normalizers.Prepend(" "), charmap]
    else:
        steps += [normalizers.Prepend(SPACE), *([charmap] if charmap else [])]
    # SentencePiece collapses runs of spaces, escapes them as "▁" and drops trailing "▁"
    # (a literal one too); the leading "▁" stays: SiglipTokenizer encodes "<unk>" + text.
    collapse = [normalizers.Replace(Regex(" {2,}"), " ")]
    trailing = [normalizers.Replace(Regex(f"{SPACE}+$"), "")]
    extra = spec.remove_extra_whitespaces
    steps += [*(collapse if extra else []), normalizers.Replace(" ", SPACE),
              *(trailing if extra else [])]
    return normalizers.Sequence(steps)


def _char_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"
