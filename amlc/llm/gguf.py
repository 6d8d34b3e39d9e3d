"""Adapter -> merged model -> GGUF (llama.cpp's converter) -> Q8_0 / Q4_K_M (llama.cpp's quantizer).

The converter comes from the llama-cpp-python source distribution (bin/fetch-models puts it in
the cache); it runs in a child process (see _convert.py). Quantization calls
`llama_cpp.llama_model_quantize`, the same code as llama.cpp's `llama-quantize`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .origin import copy_origin, model_origin_path

QUANT_TYPES = {"q8_0": 7, "q4_k_m": 15}  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_K_M


class ExportError(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where bin/fetch-models puts the converter and base models ($AMLC_CACHE or ~/.cache/amlc)."""
    return Path(os.environ.get("AMLC_CACHE", Path.home() / ".cache" / "amlc"))


def converter_dir() -> Path:
    path = Path(os.environ.get("AMLC_LLAMA_CPP", cache_dir() / "llama.cpp"))
    if not (path / "convert_hf_to_gguf.py").exists():
        raise ExportError(f"llama.cpp converter not found in {path}; run bin/fetch-models")
    return path


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None) -> Path:
    """Fold the LoRA weights into the base and save a plain HF model + tokenizer (float32)."""
    from peft import PeftModel

    from .lora import load_base, read_info

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = base or read_info(run_dir(adapter_dir))["base_dir"]
    model, tokenizer = load_base(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def run_dir(adapter_dir: Path) -> Path:
    """The train run folder of OUT/adapter or OUT/checkpoints/checkpoint-N."""
    return next((p for p in adapter_dir.resolve().parents if (p / "train_info.json").exists()), adapter_dir.parent)


def declared_pretokenizer(model_dir: Path) -> str | None:
    """'qwen2' for our locally trained tokenizers (their vocabulary has no hash in the converter)."""
    from ._convert import split_pattern
    from .tiny import QWEN2_PATTERN

    return "qwen2" if split_pattern(model_dir) == QWEN2_PATTERN else None


def vocab_source(adapter_dir: Path) -> Path | None:
    """The run's base GGUF when its vocabulary is SentencePiece: the converter cannot write that
    from tokenizer.json, so the export copies the base's (see _convert.py)."""
    from gguf import GGUFReader

    from .lora import is_gguf

    info = run_dir(adapter_dir) / "train_info.json"
    base = Path(json.loads(info.read_text())["base"]) if info.exists() else None
    if base is None or not is_gguf(base):
        return None
    field = GGUFReader(base).fields.get("tokenizer.ggml.model")
    return base if field is not None and field.contents() == "llama" else None


def to_gguf(model_dir: str | Path, out: str | Path, outtype: str = "f16", vocab_from: Path | None = None) -> Path:
    """Convert an HF folder to GGUF with llama.cpp's converter in a child process; vocab_from: a
    GGUF whose tokenizer.* fields are copied instead of converting the folder's tokenizer."""
    model_dir, out = Path(model_dir), Path(out)
    cmd = [sys.executable, "-m", "amlc.llm._convert", str(converter_dir()), str(model_dir), str(out),
           "--outtype", outtype]
    pre = declared_pretokenizer(model_dir)
    if pre:
        cmd += ["--declare-pre", pre]
    if vocab_from:
        cmd += ["--vocab-from", str(vocab_from)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise ExportError("GGUF conversion failed: " + "\n".join(proc.stderr.strip().splitlines()[-8:]))
    return out


def quantize(src: str | Path, out: str | Path, kind: str, threads: int = 1) -> Path:
    """Quantize a GGUF with llama.cpp's quantizer; kind is 'q8_0' or 'q4_k_m'."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)  # else a line per tensor
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[kind]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise ExportError(f"llama_model_quantize({kind}) returned {rc}")
    return Path(out)


@dataclass
class ExportResult:
    merged_dir: Path
    gguf: dict[str, Path] = field(default_factory=dict)   # "f16", "q8_0", "q4_k_m" -> file
    agreement: dict[str, float] = field(default_factory=dict)  # kind -> share of prompts answered alike

    def as_dict(self) -> dict:
        return {"merged_dir": str(self.merged_dir), "gguf": {k: str(v) for k, v in self.gguf.items()},
                "agreement": self.agreement}


def export_model(adapter_dir: str | Path, out_dir: str | Path, kinds: Sequence[str] = ("q8_0", "q4_k_m"),
                 check_prompts: Sequence[str] = (), base: str | Path | None = None) -> ExportResult:
    """Merge, convert to f16 GGUF, quantize to each kind; with check_prompts, measure how often each
    GGUF's greedy answer equals the merged PyTorch model's. Writes OUT/export.json."""
    from .progress import Progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checks = 2 + len(kinds) if check_prompts else 0  # the merged model's answers, then each GGUF's
    with Progress("export", 2 + len(kinds) + checks, unit="steps") as progress:
        progress.advance(0, step="merge")
        result = ExportResult(merge_adapter(adapter_dir, out / "merged", base))
        progress.advance(step="convert to GGUF f16")
        result.gguf["f16"] = to_gguf(result.merged_dir, out / "model-f16.gguf", vocab_from=vocab_source(Path(adapter_dir)))
        for kind in kinds:
            progress.advance(step=f"quantize {kind}")
            result.gguf[kind] = quantize(result.gguf["f16"], out / f"model-{kind}.gguf", kind)
        if check_prompts:
            progress.advance(step=f"merged model on {len(check_prompts)} prompts")
            reference = hf_greedy(result.merged_dir, check_prompts)
            for kind, path in result.gguf.items():
                progress.advance(step=f"{kind} on {len(check_prompts)} prompts")
                result.agreement[kind] = agreement(reference, gguf_greedy(path, check_prompts))
        progress.advance(step="done")
    for path in result.gguf.values():  # what the model learned from, beside each file
        copy_origin(run_dir(Path(adapter_dir)), model_origin_path(path))
    (out / "export.json").write_text(json.dumps(result.as_dict(), indent=2))
    return result


def hf_greedy(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 24) -> list[str]:
    """Unconstrained greedy completions of the merged PyTorch model (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def gguf_greedy(model_path: str | Path, prompts: Sequence[str], max_new_tokens: int = 24) -> list[str]:
    """Unconstrained greedy completions of a GGUF model, to compare with hf_greedy like for like."""
    from .infer import load_llama

    engine = load_llama(str(model_path), check=False)
    return [engine.generate(p, max_tokens=max_new_tokens) for p in prompts]


def agreement(reference: Sequence[str], other: Sequence[str]) -> float:
    """Share of prompts whose answers (whitespace-trimmed) are equal."""
    same = sum(a.strip() == b.strip() for a, b in zip(reference, other, strict=True))
    return same / len(reference) if reference else 0.0
