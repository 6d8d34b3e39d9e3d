"""The pipeline's stages as the engine sees them: read inputs for claimed items, do the work,
return the statements that record each outcome.

fetch: image link -> content-addressed file; ocr: file -> lines; extract: sample + lines -> answer.
Each stage only knows its own work; the engine owns claiming, queues, retries and writing.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosqlite

from .jobs import Claimed, RetryPolicy, done_statement, failure_statement
from .localfiles import is_local_copy_async
from .ocr.base import OcrResult
from .startup import rules_detail
from .store import fetch_all, id_list
from .workdir import path_in_store
from .workers.base import Failed, WorkerPool
from .writer import Statement


@dataclass
class Outcome:
    item: Claimed
    statements: list[Statement] = field(default_factory=list)  # recorded with the job's new state
    error: str | None = None
    retryable: bool = False
    settles: bool = False  # the statements set the job's state themselves (sent back upstream)


class Stage(Protocol):
    name: str
    workers: int      # concurrent workers (coroutines) pulling from the stage's queue
    batch: int        # items one worker takes at once (OCR batches on the GPU)
    policy: RetryPolicy

    async def prepare(self, reader: aiosqlite.Connection, items: list[Claimed]) -> list[tuple[Claimed, Any]]: ...

    async def process(self, tasks: list[tuple[Claimed, Any]]) -> list[Outcome]: ...


def settle(stage: str, outcome: Outcome, policy: RetryPolicy) -> list[Statement]:
    """The outcome's own statements followed by the job's transition, in one transaction."""
    if outcome.settles:
        return list(outcome.statements)
    if outcome.error is None:
        return [*outcome.statements, done_statement(stage, outcome.item.item_id)]
    return [failure_statement(stage, outcome.item, outcome.error, outcome.retryable, policy)]


def _has_size(path: Path, size: int | None) -> bool:
    try:
        return path.is_file() and (size is None or path.stat().st_size == size)
    except OSError:
        return False


REFETCH_SQL = [
    # the ocr job goes away until the image is back: the fetched_needs_ocr trigger re-creates it
    "DELETE FROM jobs WHERE stage = 'ocr' AND item_id = ?",
    "UPDATE jobs SET state = 'pending', attempts = 0, not_before = NULL, started_at = NULL, "
    "last_error = 'image file missing or changed on disk: fetched again' "
    "WHERE stage = 'fetch' AND item_id = ?",
]


def refetch(item: Claimed) -> Outcome:
    """Send an image whose file is gone or damaged back to the fetch stage."""
    return Outcome(item, [(sql, (item.item_id,)) for sql in REFETCH_SQL], settles=True)


LOCAL_CHECK_SECONDS = 10.0   # a local copy not found within this long is downloaded instead


class FetchStage:
    name = "fetch"
    batch = 1

    def __init__(self, fetcher: Any, connections: int, policy: RetryPolicy, root: Path,
                 local_dir: Path | None = None) -> None:
        self.fetcher = fetcher  # amlc.fetch.Fetcher, entered by the engine
        self.root = root        # the work folder: stored paths are relative to it, so it can move
        # twice as many workers as connections: a download waiting out a Retry-After holds a
        # worker but no connection, and one worker per connection left 5% of 503s idling a
        # third of them (0.76x the bare loop in bench/fetch.py)
        self.workers = 2 * connections
        self.policy = policy
        self.local_dir = local_dir  # images downloaded earlier, named as in their links

    async def source(self, link: str) -> str:
        """The local copy of a link's image when the user has one (a regular file named as in
        the link, inside --local-images once symlinks are resolved), else the link itself. The
        check runs off the event loop: the folder may be a mount that hangs."""
        if self.local_dir is not None:
            local = self.local_dir.absolute() / unquote(urlsplit(link).path).rsplit("/", 1)[-1]
            if await is_local_copy_async(local, self.local_dir, LOCAL_CHECK_SECONDS):
                return str(local)
        return link

    async def prepare(self, reader, items):
        ids = id_list(i.item_id for i in items)
        rows = await fetch_all(reader, f"SELECT id, link FROM images WHERE id IN ({ids})")
        links = {r["id"]: r["link"] for r in rows}
        return [(item, links[item.item_id]) for item in items]

    async def process(self, tasks):
        return [await self._one(item, link) for item, link in tasks]

    async def _one(self, item: Claimed, link: str) -> Outcome:
        got = await self.fetcher.fetch(await self.source(link))
        if got.error:
            return Outcome(item, error=got.error, retryable=got.retryable)
        record = ("UPDATE images SET path = ?, sha256 = ?, width = ?, height = ?, size = ? WHERE id = ?",
                  (path_in_store(got.path, self.root), got.sha256, got.width, got.height, got.size,
                   item.item_id))
        return Outcome(item, [record])


class OcrStage:
    name = "ocr"
    mark_started = True  # an engine may crash the process on a poison image

    def __init__(self, pool: WorkerPool, batch: int, policy: RetryPolicy, root: Path = Path("."),
                 describe: str = "") -> None:
        self.root = root  # the work folder that stored image paths are relative to
        self.describe = describe  # engine, runtime and device, for the dashboard
        self.pool = pool  # OCR engines (amlc.ocr.OcrSpec) in worker processes, or one in a thread
        self.workers = pool.size  # one batch in flight per engine
        self.batch = batch
        self.policy = policy
        self.calls = 0  # images handed to the engine, for tests and the dashboard

    async def prepare(self, reader, items):
        ids = id_list(i.item_id for i in items)
        rows = await fetch_all(reader, f"SELECT id, path, size FROM images WHERE id IN ({ids})")
        found = {r["id"]: (self.root / r["path"], r["size"]) for r in rows}
        files = [found[item.item_id] for item in items]
        intact = await asyncio.to_thread(lambda: [_has_size(path, size) for path, size in files])
        return [(item, str(path)) if ok else refetch(item)
                for item, (path, _), ok in zip(items, files, intact)]

    async def process(self, tasks):
        self.calls += len(tasks)
        # Decoding and OCR happen in the pool's workers, off the event loop; a batch that fails
        # as a whole is re-run there one image at a time, so one bad image fails alone.
        results = await self.pool.run([path for _, path in tasks])
        return [self._outcome(item, result) for (item, _), result in zip(tasks, results)]

    def _outcome(self, item: Claimed, result: Any) -> Outcome:
        if isinstance(result, Failed):
            return Outcome(item, error=result.error, retryable=result.retryable)
        return Outcome(item, [self._record(item, result)])

    def _record(self, item: Claimed, result: Any) -> Statement:
        return ("INSERT OR REPLACE INTO ocr_results(image_id, engine, lines, text, preprocess, "
                "seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item.item_id, result.engine, result.to_json(), result.text(),
                 json.dumps(result.preprocess), result.seconds, time.time()))


class ExtractStage:
    name = "extract"
    mark_started = True
    workers = 1
    batch = 64

    def __init__(self, extractor: Any, engine_name: str, policy: RetryPolicy) -> None:
        self.extractor = extractor  # amlc.extract.Extractor
        self.engine_name = engine_name
        self.policy = policy

    async def prepare(self, reader, items):
        rows = await fetch_all(reader, f"""
            SELECT s.id, s.entity, s.group_id, o.lines FROM samples s
            LEFT JOIN ocr_results o ON o.image_id = s.image_id AND o.engine = ?
            WHERE s.id IN ({id_list(i.item_id for i in items)})""", (self.engine_name,))
        found = {r["id"]: r for r in rows}
        return [(item, found[item.item_id]) for item in items]

    async def process(self, tasks):
        return await asyncio.to_thread(lambda: [self._one(item, row) for item, row in tasks])

    def _one(self, item: Claimed, row: Any) -> Outcome:
        if row["lines"] is None:
            return Outcome(item, error=f"no OCR result from {self.engine_name}")
        lines = OcrResult.from_json(row["lines"]).lines
        prediction = self.extractor.predict(row["entity"], lines, row["group_id"])
        record = ("INSERT OR REPLACE INTO predictions(sample_id, source, prediction, confidence, "
                  "created_at, detail) VALUES (?, 'rules', ?, ?, ?, ?)",
                  (item.item_id, prediction.text(), prediction.confidence, time.time(),
                   rules_detail(self.engine_name, self.extractor.digest)))
        return Outcome(item, [record])
