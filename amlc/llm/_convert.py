"""Run llama.cpp's HF -> GGUF converter (from the llama-cpp-python sdist) on one model folder.

Invoked in a subprocess by gguf.py: the converter puts its own `gguf-py` first on sys.path and
registers model classes globally, which must not leak into the calling process.

A tokenizer trained locally has no known hash in the converter's table (the hash is over token
ids, which depend on the learned vocabulary), so `--declare-pre qwen2` names the pre-tokenizer
explicitly; it is accepted only when tokenizer.json's split pattern is exactly Qwen2's.

A SentencePiece vocabulary (Gemma 3's) is written by the converter only from `tokenizer.model`,
which a base read from a GGUF does not have; `--vocab-from BASE.gguf` copies the base's
`tokenizer.*` fields as they are instead (LoRA leaves the vocabulary unchanged).

    python -m amlc.llm._convert CONVERTER_DIR MODEL_DIR OUT.gguf [--outtype f16] [--declare-pre qwen2]
                                [--vocab-from BASE.gguf]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DECLARABLE = {"qwen2": "QWEN2_PATTERN"}  # pre-tokenizer name -> constant in amlc.llm.tiny


def split_pattern(model_dir: Path) -> str | None:
    """The regex of the first Split pre-tokenizer in tokenizer.json, if any."""
    pre = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    for step in pre.get("pretokenizers", [pre]):
        if step.get("type") == "Split":
            return step["pattern"].get("Regex")
    return None


def check_declared(model_dir: Path, name: str) -> None:
    from . import tiny

    expected = getattr(tiny, DECLARABLE[name])
    if split_pattern(model_dir) != expected:
        raise SystemExit(f"tokenizer.json's pre-tokenizer is not {name}'s; refusing to declare it")


def copy_vocab(writer, source: Path) -> None:
    """Every tokenizer.* field of the GGUF `source`, with its own value types, into `writer`."""
    import gguf

    for key, field in gguf.GGUFReader(source).fields.items():
        if key.startswith("tokenizer."):
            vtype = gguf.GGUFValueType(field.types[0])
            sub_type = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)


def convert(converter_dir: Path, model_dir: Path, out: Path, outtype: str, declare_pre: str | None,
            vocab_from: Path | None = None) -> None:
    sys.path.insert(0, str(converter_dir / "gguf-py"))
    sys.path.insert(0, str(converter_dir))
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    hparams = ModelBase.load_hparams(model_dir, False)
    model_class = get_model_class(get_model_architecture(hparams, ModelType.TEXT))
    if declare_pre:
        check_declared(model_dir, declare_pre)
        model_class = type(model_class.__name__, (model_class,),
                           {"model_arch": model_class.model_arch,
                            "get_vocab_base_pre": lambda self, tokenizer: declare_pre})
    if vocab_from:
        model_class = type(model_class.__name__, (model_class,),
                           {"model_arch": model_class.model_arch,
                            "set_vocab": lambda self: copy_vocab(self.gguf_writer, vocab_from)})
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    with torch.inference_mode():
        model_class(model_dir, ftype, out, eager=True).write()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("converter_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--outtype", default="f16")
    parser.add_argument("--declare-pre", choices=sorted(DECLARABLE))
    parser.add_argument("--vocab-from", type=Path)
    args = parser.parse_args()
    convert(args.converter_dir, args.model_dir, args.out, args.outtype, args.declare_pre, args.vocab_from)


if __name__ == "__main__":
    main()
