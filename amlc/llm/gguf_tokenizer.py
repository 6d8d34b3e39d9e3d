"""A faithful HF tokenizer from a GGUF file's own vocabulary (gpt2-style BPE).

transformers' GGUF loader rebuilds SmolLM2's tokenizer without its pre-tokenizer (no digit
split, a byte-fallback decoder). Training on that and decoding with llama.cpp (which splits digits
one by one for `smollm`) would tokenize numbers differently, and llama.cpp's converter does not
recognise it. Here the tokenizer is rebuilt from the GGUF's tokens and merges with the
pre-tokenizer its `tokenizer.ggml.pre` names; the converter then identifies it by its own hash
check, which is the proof that the rebuild is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .tiny import QWEN2_PATTERN

CONTROL = 3  # gguf.TokenType.CONTROL


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


def tokenizer_from_gguf(path: str | Path):
    """A transformers fast tokenizer equal to the one llama.cpp builds from this GGUF."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    fields = GGUFReader(path).fields
    value = lambda key: fields[key].contents() if key in fields else None  # noqa: E731
    kind, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre")
    if kind != "gpt2" or pre not in PRE_TOKENIZERS:
        raise UnsupportedTokenizer(f"tokenizer {kind}/{pre} cannot be rebuilt (known: gpt2/{sorted(PRE_TOKENIZERS)})")
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind_ in zip(tokens, types) if kind_ == CONTROL])
    special = {name: tokens[value(f"tokenizer.ggml.{key}_token_id")]
               for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"),
                                 ("unk_token", "unknown")) if value(f"tokenizer.ggml.{key}_token_id") is not None}
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    template = value("tokenizer.chat_template")
    if template:
        out.chat_template = template
    return out
