"""The LLM stage: answers from a quantized model through llama.cpp, written to the store.

Its work is one job per (model, sample) under the stage name `predict:<model>@<digest>`, added
for every sample whose rules have run, so several models can answer the same split and each
resumes on its own; the digest is of the file's content, so a new model exported under an old
name answers again. Prompts match training: the entity, the OCR text that matters and the rules'
candidates (ranked on the OCR lines with their boxes). The model scores each candidate; each
sample gets two answers: the model's own choice (source `<model>`; where the model abstains, the
rules' answer can stand in, `fallback`) and rules and model together (source `rules+<model>`,
amlc.llm.choice), so `amlc eval` and `amlc export` weigh the three sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from .jobs import Claimed, RetryPolicy
from .stages import Outcome
from .store import fetch_all, id_list
from .workers import Failed, WorkerPool

ENQUEUE_SQL = """
INSERT OR IGNORE INTO jobs(stage, item_id)
SELECT :stage, e.item_id FROM jobs e JOIN samples s ON s.id = e.item_id
WHERE e.stage = 'extract' AND e.state = 'done' AND (:split IS NULL OR s.split = :split)
"""

INPUTS_SQL = """
SELECT s.id, s.entity, s.group_id, o.text, o.lines, o.created_at AS ocr_at, r.prediction AS rules,
       r.created_at AS rules_at
FROM samples s
LEFT JOIN ocr_results o ON o.image_id = s.image_id AND o.engine = ?
LEFT JOIN predictions r ON r.sample_id = s.id AND r.source = 'rules'
WHERE s.id IN ({ids})
"""


def stage_name(model_path: Path) -> str:
    return f"predict:{model_path.stem}@{content_digest(model_path)[:12]}"


def content_digest(path: Path) -> str:
    """sha256 of a file, remembered beside it by size and mtime (a 7B GGUF takes seconds)."""
    stat = path.stat()
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    memo = path.with_name(path.name + ".sha256")
    try:
        cached_key, digest = memo.read_text().rsplit(" ", 1)
        if cached_key == key:
            return digest
    except (OSError, ValueError):
        pass
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
    with contextlib.suppress(OSError):  # a read-only model folder only costs the next run a hash
        memo.write_text(f"{key} {sha.hexdigest()}")
    return sha.hexdigest()


async def record_model(conn: aiosqlite.Connection, source: str, model_path: Path) -> None:
    """A `model` run naming the source, its file and what it was trained on (amlc.llm.origin):
    what `amlc eval` reads to tell rows the model learned from."""
    from .llm.origin import model_origin

    config = {"source": source, "model": str(model_path.resolve()), "trained_on": model_origin(model_path)}
    await conn.execute("INSERT INTO runs(kind, config, status, started_at, finished_at) "
                       "VALUES ('model', ?, 'done', ?, ?)", (json.dumps(config), time.time(), time.time()))
    await conn.commit()


class PredictStage:
    mark_started = True  # llama.cpp may crash the process on an input
    batch = 16    # samples per worker call, so identical prompts within it are decoded once

    def __init__(self, model_path: Path, pool: WorkerPool, ocr_engine: str, policy: RetryPolicy,
                 split: str | None = None, fallback: bool = True, batch: int | None = None) -> None:
        from .extract import Extractor
        from .llm.choice import load_weight

        self.source = model_path.stem
        self.name = stage_name(model_path)
        self.ocr_engine = ocr_engine
        self.policy = policy
        self.split = split
        self.fallback = fallback
        self.pool = pool  # llama.cpp engines (amlc.llm.infer.LlmSpec) in processes or a thread
        self.workers = pool.size  # one batch in flight per engine
        self.batch = batch or self.batch  # at least the rows a worker decodes together
        self.extractor = Extractor.load()
        self.weight = load_weight(model_path)  # fitted beside the model by `amlc llm-bench`
        self.model_path = model_path
        self._recorded = False  # the model and what it learned from, in the store's runs

    async def enqueue(self, conn: aiosqlite.Connection) -> int:
        if not self._recorded:
            await record_model(conn, self.source, self.model_path)
            self._recorded = True
        cursor = await conn.execute(ENQUEUE_SQL, {"stage": self.name, "split": self.split})
        await conn.commit()
        return cursor.rowcount

    async def prepare(self, reader, items):
        rows = {r["id"]: r for r in await fetch_all(
            reader, INPUTS_SQL.format(ids=id_list(i.item_id for i in items)), (self.ocr_engine,))}
        # Same-entity rows side by side: a worker's batch then shares more prompt prefix.
        return sorted(((item, rows[item.item_id]) for item in items), key=lambda t: t[1]["entity"])

    async def process(self, tasks):
        chosen = await asyncio.to_thread(self._items, tasks)
        replies = await self.pool.run([item for _, item in chosen])
        return [self._outcome(item, row, options, reply)
                for (item, row), (options, _), reply in zip(tasks, chosen, replies)]

    def _items(self, tasks: list[tuple[Claimed, Any]]) -> list:
        """Per sample: the rules' options (on its OCR lines with boxes) and the model's item."""
        from .llm.choice import choice_item
        from .ocr import OcrResult

        return [choice_item(self.extractor, row["entity"], row["text"] or "", row["group_id"],
                            OcrResult.from_json(row["lines"]).lines if row["lines"] else ())
                for _, row in tasks]

    def _outcome(self, item: Claimed, row: Any, options: Any, reply: Any) -> Outcome:
        from .llm.choice import combined_answer, model_choice

        if isinstance(reply, Failed):
            return Outcome(item, error=reply.error, retryable=reply.retryable)
        answer = model_choice(options, reply)
        made_from = self._inputs(row)
        detail: dict[str, Any] = {"model": self.source, **made_from}
        if not answer and self.fallback and row["rules"]:
            answer, detail["fallback"] = row["rules"], "rules"
        sql = ("INSERT OR REPLACE INTO predictions(sample_id, source, prediction, confidence, "
               "created_at, detail) VALUES (?, ?, ?, NULL, ?, ?)")
        both = combined_answer(options, reply, self.weight)
        now = time.time()
        return Outcome(item, [(sql, (item.item_id, self.source, answer, now, json.dumps(detail))),
                              (sql, (item.item_id, f"rules+{self.source}", both, now, json.dumps(
                                  {"model": self.source, "weight": self.weight, **made_from})))])

    def _inputs(self, row: Any) -> dict[str, Any]:
        """What the answer was made from: the OCR reading (engine, when it was stored, a digest
        of its text), the rules' answer it saw and the ranker that made the candidates. Export
        and eval pass over an answer whose reading or rules answer the store no longer holds."""
        text = row["text"] or ""
        return {"ocr": self.ocr_engine, "ocr_at": row["ocr_at"], "rules_at": row["rules_at"],
                "text_sha1": hashlib.sha1(text.encode("utf-8")).hexdigest()[:12],
                "ranker": self.extractor.digest}
