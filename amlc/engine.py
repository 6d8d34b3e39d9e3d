"""The streaming engine behind `amlc run`: claim -> bounded queue -> workers -> batched writer.

Every stage has one feeder that claims pending jobs from the store while its queue has room
and a few workers that process them. Queues are bounded, so a slow stage pushes back on a
fast one and memory stays flat whatever the input size. Stop is cooperative: the feeders stop
claiming, workers finish what they hold, unstarted claims go back to pending.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import aiosqlite

from .jobs import Claimed
from .stages import Outcome, Stage, settle
from .store import fetch_all
from .writer import BatchWriter

RELEASE_SQL = ("UPDATE jobs SET state = 'pending', lease_until = NULL, attempts = attempts - 1 "
               "WHERE stage = ? AND item_id = ? AND state = 'leased'")


@dataclass
class StageStats:
    """What the dashboard shows per stage, counted by this process."""
    done: int = 0
    failed: int = 0
    retried: int = 0
    in_flight: int = 0
    queued: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))


class Engine:
    def __init__(self, stages: Sequence[Stage], writer: BatchWriter, reader: aiosqlite.Connection,
                 lease_seconds: float = 600.0, poll_seconds: float = 1.0) -> None:
        self.stages = list(stages)
        self.writer = writer
        self.reader = reader
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds  # how often an idle feeder looks for new work
        self.stats = {s.name: StageStats() for s in self.stages}
        self.stopping = asyncio.Event()
        self._queues = {s.name: asyncio.Queue[tuple[Claimed, Any]](maxsize=max(4, 2 * s.batch * s.workers))
                        for s in self.stages}

    async def run(self, exit_when_done: bool) -> None:
        tasks = [asyncio.create_task(self._feed(s), name=f"feed-{s.name}") for s in self.stages]
        tasks += [asyncio.create_task(self._work(s), name=f"work-{s.name}-{i}")
                  for s in self.stages for i in range(s.workers)]
        watcher = asyncio.create_task(self._watch_done(exit_when_done))
        try:
            await self.stopping.wait()
            await self._drain(tasks)
        finally:
            watcher.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(watcher, *tasks, return_exceptions=True)
            await self.writer.flush()

    def stop(self) -> None:
        self.stopping.set()

    async def _feed(self, stage: Stage) -> None:
        queue = self._queues[stage.name]
        while not self.stopping.is_set():
            room = queue.maxsize - queue.qsize()
            claimed = await self.writer.claim(stage.name, room, self.lease_seconds) if room else []
            for task in await stage.prepare(self.reader, claimed) if claimed else []:
                await queue.put(task)
            self.stats[stage.name].queued = queue.qsize()
            if not claimed and not await self._enqueue(stage):
                await self._sleep(self.poll_seconds)

    async def _enqueue(self, stage: Stage) -> int:
        """Stages whose work is not made by the schema's triggers (one per model) add it here."""
        enqueue = getattr(stage, "enqueue", None)
        return await self.writer.run(enqueue) if enqueue else 0

    async def _work(self, stage: Stage) -> None:
        queue, stats = self._queues[stage.name], self.stats[stage.name]
        while True:
            batch = [await queue.get()]
            while len(batch) < stage.batch and not queue.empty():
                batch.append(queue.get_nowait())
            stats.in_flight += len(batch)
            try:
                outcomes = await self._process(stage, batch)
            finally:
                stats.in_flight -= len(batch)
            self._record(stage, outcomes)

    async def _process(self, stage: Stage, batch: list[tuple[Claimed, Any]]) -> list[Outcome]:
        try:
            return await stage.process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a broken input: recorded on the row, never fatal
            reason = f"{type(exc).__name__}: {exc}"[:500]
            return [Outcome(item, error=reason, retryable=True) for item, _ in batch]

    def _record(self, stage: Stage, outcomes: list[Outcome]) -> None:
        stats = self.stats[stage.name]
        for outcome in outcomes:
            self.writer.submit(settle(stage.name, outcome, stage.policy))
            if outcome.error is None:
                stats.done += 1
                continue
            final = not outcome.retryable or outcome.item.attempts >= stage.policy.max_attempts
            stats.failed += final
            stats.retried += not final
            stats.errors[outcome.error.split(":")[0][:60]] += 1
            stats.last_errors.append(f"{stage.name} #{outcome.item.item_id}: {outcome.error}")

    async def _drain(self, tasks: list[asyncio.Task]) -> None:
        """Stop claiming, give unstarted items back, let workers finish what they hold."""
        for name, queue in self._queues.items():
            while not queue.empty():
                item, _ = queue.get_nowait()
                self.writer.submit([(RELEASE_SQL, (name, item.item_id))])
        while any(s.in_flight for s in self.stats.values()):
            await asyncio.sleep(0.05)

    async def _watch_done(self, exit_when_done: bool) -> None:
        while exit_when_done and not self.stopping.is_set():
            await self._sleep(self.poll_seconds)
            if await self.idle():
                self.stop()

    async def idle(self) -> bool:
        """No work queued, in flight, unwritten or waiting in the store for these stages."""
        if any(s.in_flight or not self._queues[n].empty() for n, s in self.stats.items()):
            return False
        await self.writer.flush()
        for stage in self.stages:
            if await self._enqueue(stage):
                return False
        names = ",".join(f"'{s.name}'" for s in self.stages)
        rows = await fetch_all(self.reader, f"SELECT count(*) FROM jobs WHERE stage IN ({names}) "
                                            "AND state IN ('pending', 'leased')")
        return rows[0][0] == 0

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass
