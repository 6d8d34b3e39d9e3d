"""A faithful HF tokenizer from a GGUF file's own vocabulary (gpt2-style BPE or SentencePiece).

transformers' GGUF loader rebuilds SmolLM2's tokenizer without its pre-tokenizer (no digit
split, a byte-fallback decoder). Training on that and decoding with llama.cpp (which splits digits
one by one for `smollm`) would tokenize numbers differently, and llama.cpp's converter does not
recognise it. Here the tokenizer is rebuilt from the GGUF's tokens and merges with the
pre-tokenizer its `tokenizer.ggml.pre` names; the converter then identifies it by its own hash
check, which is the proof that the rebuild is exact.

A SentencePiece vocabulary (`llama`, e.g. Gemma 3) has scores instead of merges: llama.cpp merges
the adjacent pair whose joined piece scores highest. transformers' loader turns it into a Unigram
model that splits words differently and adds no BOS; here it becomes a BPE whose merges are ranked
by the joined piece's score, with byte fallback and BOS as the GGUF asks. Its converter cannot
write such a vocabulary back without `tokenizer.model`, so the export copies the base's
(gguf.py: vocab_source).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from .tiny import QWEN2_PATTERN

CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType
SPM_SPACE = "\u2581"  # SentencePiece's visible space


def _smollm():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def _qwen2():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


PRE_TOKENIZERS: dict[str, Callable] = {"smollm": _smollm, "qwen2": _qwen2}


class UnsupportedTokenizer(ValueError):
    pass


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces, ranked by the joined piece's score (best first):
    the order in which llama.cpp's SentencePiece tokenizer merges."""
    ids = {t: i for i, t in enumerate(tokens)}
    found = [(-scores[i], ids[t[:cut]], t[:cut], t[cut:]) for i, t in enumerate(tokens)
             for cut in range(1, len(t)) if t[:cut] in ids and t[cut:] in ids]
    return [(left, right) for _, _, left, right in sorted(found)]


def _spm_tokenizer(tokens: list[str], scores: list[float], unk: str | None):
    from tokenizers import Tokenizer, decoders, models, normalizers

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=spm_merges(tokens, scores),
                               unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", SPM_SPACE)  # no dummy prefix: add_space_prefix is checked
    tok.decoder = decoders.Sequence([decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def _gpt2_tokenizer(tokens: list[str], merges: list[str], pre: str):
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    return tok


def field_value(fields, key: str):
    """A GGUF field's value, or None where the file has no such field."""
    return fields[key].contents() if key in fields else None


def tokenizer_kind(fields) -> str:
    """'gpt2' or 'llama' (SentencePiece), when this module can rebuild the vocabulary exactly."""
    value = partial(field_value, fields)
    kind, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre")
    if kind == "gpt2" and pre in PRE_TOKENIZERS:
        return kind
    if kind == "llama" and value("tokenizer.ggml.add_space_prefix") is False:
        return kind
    raise UnsupportedTokenizer(f"tokenizer {kind}/{pre} cannot be rebuilt (known: gpt2/{sorted(PRE_TOKENIZERS)}, "
                               "llama without a space prefix)")


def tokenizer_from_gguf(path: str | Path):
    """A transformers fast tokenizer equal to the one llama.cpp builds from this GGUF."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    fields = GGUFReader(path).fields
    value = partial(field_value, fields)
    kind = tokenizer_kind(fields)
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    special = {name: tokens[value(f"tokenizer.ggml.{key}_token_id")]
               for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"),
                                 ("unk_token", "unknown")) if value(f"tokenizer.ggml.{key}_token_id") is not None}
    if kind == "gpt2":
        tok = _gpt2_tokenizer(tokens, value("tokenizer.ggml.merges"), value("tokenizer.ggml.pre"))
    else:
        tok = _spm_tokenizer(tokens, value("tokenizer.ggml.scores"), special.get("unk_token"))
    # llama.cpp matches control pieces only as special tokens, user-defined ones ('\n\n') always
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind_ in zip(tokens, types) if kind_ == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind_ in zip(tokens, types) if kind_ == USER_DEFINED])
    if value("tokenizer.ggml.add_bos_token") and "bos_token" in special:
        bos = special["bos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tokens.index(bos))])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    template = value("tokenizer.chat_template")
    if template:
        out.chat_template = template
    return out
