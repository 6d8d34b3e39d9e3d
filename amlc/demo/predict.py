"""Thin glue from the store to the LLM engineer's inference: OCR'd samples -> prompts (with the
rules' candidates, as in training) -> grammar-constrained llama.cpp answers -> `predictions`
rows with source = the model's name. Resumes: samples already answered by that source are skipped.

This belongs in a proper `amlc predict` stage; the demo keeps it minimal until that exists.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Sequence

import aiosqlite

from ..store import fetch_all, finish_run, open_writer, start_run

CHUNK = 32  # samples answered between commits: an interruption loses at most this many

PENDING_SQL = """
SELECT s.id, s.entity, s.group_id, o.text FROM samples s
JOIN ocr_results o ON o.image_id = s.image_id AND o.engine = ?
WHERE s.split IN ({splits})
  AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.sample_id = s.id AND p.source = ?)
ORDER BY s.id
"""
INSERT_SQL = ("INSERT OR REPLACE INTO predictions(sample_id, source, run_id, prediction, confidence, "
              "created_at) VALUES (?, ?, ?, ?, NULL, ?)")


async def pending(conn: aiosqlite.Connection, splits: Sequence[str], source: str,
                  ocr_engine: str) -> list[aiosqlite.Row]:
    marks = ",".join("?" for _ in splits)
    return await fetch_all(conn, PENDING_SQL.format(splits=marks), (ocr_engine, *splits, source))


def prompts_for(rows: Sequence[aiosqlite.Row]) -> list[tuple[str, str]]:
    """(entity, prompt) per row, built exactly as the SFT rows were (amlc.llm.sft)."""
    from ..llm.prompt import build_prompt
    from ..llm.sft import extractor_candidates

    cands = extractor_candidates()
    return [(r["entity"], build_prompt(r["entity"], r["text"],
                                       cands(r["entity"], r["text"], r["group_id"]) if cands else None))
            for r in rows]


async def predict_store(store: Path, model_gguf: Path, source: str, splits: Sequence[str],
                        ocr_engine: str = "rapidocr", threads: int = 1) -> int:
    """Answer every OCR'd sample of `splits` not yet answered by `source`; returns how many."""
    from ..llm.infer import answer_items, load_engine

    conn = await open_writer(store)
    try:
        rows = await pending(conn, splits, source, ocr_engine)
        if not rows:
            return 0
        run_id = await start_run(conn, "predict", json.dumps({"model": str(model_gguf), "source": source,
                                                              "splits": list(splits)}))
        engine = await asyncio.to_thread(load_engine, str(model_gguf), threads)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            answers = await asyncio.to_thread(answer_items, engine, prompts_for(chunk))
            await conn.executemany(INSERT_SQL, [(r["id"], source, run_id, a, time.time())
                                                for r, a in zip(chunk, answers)])
            await conn.commit()
        await finish_run(conn, run_id, json.dumps({"answered": len(rows)}))
        return len(rows)
    finally:
        await conn.close()
