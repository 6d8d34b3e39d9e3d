"""The single writer: stages hand it statements, it commits them in batches.

Committing per row would cap the pipeline at a few hundred rows/s on a slow disk; batching by
count or every few hundred milliseconds keeps one fsync for many results. A crash loses at most
the last uncommitted batch, which is work still in flight: it is claimed and done again. A batch
that cannot be written (disk full) is rolled back whole, kept for a later try, and the error
ends the writer's task, which the engine supervises. A store another program is writing (an
`amlc ingest` beside the run) is a wait, not a fault: the batch is tried again until the store
frees up, for at most `store_wait` seconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import aiosqlite

from . import jobs

Statement = tuple[str, Sequence[Any]]
T = TypeVar("T")
STORE_WAIT = 300.0    # seconds a busy store is waited for before the run stops (amlc run --store-wait)
RETRY_PAUSE = 0.2     # between tries on a busy store, beyond SQLite's own busy timeout


class StoreBusy(sqlite3.OperationalError):
    """The store stayed locked by another program past the wait; the message says how long."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"database is locked: waited {waited:.0f} s for another program to finish writing")
        self.waited = waited


def is_busy(exc: BaseException) -> bool:
    """SQLite's word that another connection holds the store's write lock."""
    return isinstance(exc, sqlite3.OperationalError) and not isinstance(exc, StoreBusy) and \
        ("locked" in str(exc) or "busy" in str(exc))


class BatchWriter:
    def __init__(self, conn: aiosqlite.Connection, max_batch: int = 500,
                 max_delay: float = 0.25, store_wait: float = STORE_WAIT) -> None:
        self.conn = conn
        self.store_wait = store_wait    # seconds a busy store is waited for, then StoreBusy
        self.longest_write = 0.0        # seconds the slowest write took, waits for the store included
        self.max_batch = max_batch      # statements per commit at most
        self.max_delay = max_delay      # seconds a statement may wait for its commit
        self._pending: list[Statement] = []
        self._lock = asyncio.Lock()     # one user of the connection at a time
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None  # the last batch that could not be written
        self.commits = 0
        self.statements = 0

    async def __aenter__(self) -> "BatchWriter":
        self.task = asyncio.create_task(self._run(), name="writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if exc_info[0] is None and self.failure is None:
            await self.flush()

    @property
    def pending(self) -> int:
        """Statements waiting for their commit."""
        return len(self._pending)

    def submit(self, statements: Sequence[Statement]) -> None:
        """Queue statements that belong together; they commit in the same transaction."""
        self._pending.extend(statements)
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self._patiently(lambda: self._commit(batch))
            except BaseException as exc:
                self._pending[:0] = batch  # nothing half-committed, nothing dropped
                self.failure = exc
                raise
            self.commits += 1
            self.statements += len(batch)

    async def _commit(self, batch: Sequence[Statement]) -> None:
        for sql, params in batch:
            await self.conn.execute(sql, params)
        await self.conn.commit()

    async def _patiently(self, write: Callable[[], Awaitable[T]]) -> T:
        """`write`, tried again while another program holds the store, for at most store_wait
        seconds; each failed try is rolled back whole."""
        started = time.monotonic()
        while True:
            try:
                result = await write()
                self.longest_write = max(self.longest_write, time.monotonic() - started)
                return result
            except BaseException as exc:
                await self._rollback()
                waited = time.monotonic() - started
                if not is_busy(exc):
                    raise
                if waited >= self.store_wait:
                    raise StoreBusy(waited) from exc
                await asyncio.sleep(RETRY_PAUSE)

    async def _rollback(self) -> None:
        try:
            await asyncio.shield(self.conn.rollback())
        except Exception:
            pass  # the connection is unusable; SQLite has already discarded the transaction

    async def claim(self, stage: str, n: int, lease_seconds: float) -> list[jobs.Claimed]:
        return await self.run(lambda conn: jobs.claim(conn, stage, n, lease_seconds))

    async def run(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Use the connection alone (a claim, a bulk insert); commits are the caller's."""
        async with self._lock:
            return await self._patiently(lambda: work(self.conn))

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.max_delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            started = time.perf_counter()
            await self.flush()
            # yield at least briefly so a flood of submits still batches
            await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - started)))
