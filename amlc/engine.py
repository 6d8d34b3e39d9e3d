"""The streaming engine behind `amlc run`: claim -> bounded queue -> workers -> batched writer.

Every stage has one feeder that claims pending jobs from the store as soon as its queue has
room and a few workers that process them. Queues are bounded, so a slow stage pushes back on a
fast one and memory stays flat whatever the input size. Stop is cooperative: the feeders stop
claiming, workers finish what they hold, unstarted claims go back to pending.

Every task is supervised: one that fails for good (the disk is full, the store stays locked, a
bug) stops the whole run within seconds with its cause in `Engine.fatal`, instead of leaving
the others to wait for it forever.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Coroutine, Sequence

import aiosqlite

from .faults import describe_fatal, failure_cause, is_fatal
from .jobs import Claimed, mark_started
from .stages import Outcome, Stage, settle
from .store import fetch_all
from .workers.base import describe
from .writer import BatchWriter

# A claim given back uncharged: its try is returned and it no longer counts as begun.
RELEASE_SQL = ("UPDATE jobs SET state = 'pending', lease_until = NULL, started_at = NULL, "
               "attempts = attempts - 1 WHERE stage = ? AND item_id = ? AND state = 'leased'")
FATAL_DRAIN_SECONDS = 5.0  # after a fatal fault, how long work in flight may take to finish


@dataclass
class StageStats:
    """What the dashboard shows per stage, counted by this process."""
    done: int = 0
    failed: int = 0
    retried: int = 0
    queued: int = 0
    held: set[int] = field(default_factory=set)  # ids of the items in workers' hands
    errors: Counter[str] = field(default_factory=Counter)
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))

    @property
    def in_flight(self) -> int:
        return len(self.held)


class Engine:
    def __init__(self, stages: Sequence[Stage], writer: BatchWriter, reader: aiosqlite.Connection,
                 lease_seconds: float = 600.0, poll_seconds: float = 1.0,
                 root: Path | None = None) -> None:
        self.stages = list(stages)
        self.writer = writer
        self.reader = reader
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds  # how often an idle feeder looks for new work
        self.stats = {s.name: StageStats() for s in self.stages}
        self.stopping = asyncio.Event()
        self.root = root                  # the work folder, named in fault messages
        self.fatal: str | None = None     # why the run stopped on its own, in words for the user
        self.fatal_error: BaseException | None = None
        self._queues = {s.name: asyncio.Queue[tuple[Claimed, Any]](maxsize=max(4, 2 * s.batch * s.workers))
                        for s in self.stages}
        self._room = {s.name: asyncio.Event() for s in self.stages}  # set when a worker takes items
        self._quiet = asyncio.Event()  # set when an outcome leaves nothing queued or in flight

    async def run(self, exit_when_done: bool, *companions: Coroutine[Any, Any, None]) -> None:
        """Run until stopped, done (with exit_when_done) or a fatal fault; companions (the
        dashboard) are supervised and cancelled with the rest."""
        tasks = [asyncio.create_task(self._feed(s), name=f"feed-{s.name}") for s in self.stages]
        tasks += [asyncio.create_task(self._work(s), name=f"work-{s.name}-{i}")
                  for s in self.stages for i in range(s.workers)]
        tasks += [asyncio.create_task(self._watch_done(exit_when_done), name="watch-done")]
        tasks += [asyncio.create_task(c, name=f"companion-{i}") for i, c in enumerate(companions)]
        tasks += [self.writer.task] if self.writer.task else []
        try:
            await self._supervise(tasks)
            await self._drain(FATAL_DRAIN_SECONDS if self.fatal else None)
        finally:
            ours = [task for task in tasks if task is not self.writer.task]
            for task in ours:
                task.cancel()
            await asyncio.gather(*ours, return_exceptions=True)
            await self._final_flush()

    def stop(self) -> None:
        self.stopping.set()

    async def _supervise(self, tasks: list[asyncio.Task]) -> None:
        """Wait for a stop; a task that ends on its own before that is a fault that stops the run."""
        stop = asyncio.create_task(self.stopping.wait(), name="stop")
        try:
            while not self.stopping.is_set():
                ended, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in ended - {stop}:
                    tasks.remove(task)
                    if task.cancelled() or task.exception() or not self.stopping.is_set():
                        self._fail(task)
        finally:
            stop.cancel()

    def _fail(self, task: asyncio.Task) -> None:
        if task.cancelled():
            exc: BaseException = RuntimeError(f"{task.get_name()} was cancelled")
        else:
            exc = task.exception() or RuntimeError(f"{task.get_name()} ended unexpectedly")
        self._set_fatal(exc, task.get_name())
        self.stop()

    def _set_fatal(self, exc: BaseException, where: str) -> None:
        if self.fatal is None:
            self.fatal, self.fatal_error = describe_fatal(exc, where, self.root), exc

    async def _final_flush(self) -> None:
        try:
            await self.writer.flush()
        except Exception as exc:  # the last batch could not be written: say why, lose nothing else
            self._set_fatal(exc, "writer")

    async def _feed(self, stage: Stage) -> None:
        queue, room = self._queues[stage.name], self._room[stage.name]
        chunk = max(1, queue.maxsize // 4)  # claim in chunks: one claim query per quarter queue
        while not self.stopping.is_set():
            while queue.maxsize - queue.qsize() < chunk and not self.stopping.is_set():
                room.clear()
                await self._wait(room)
            claimed = await self.writer.claim(stage.name, queue.maxsize - queue.qsize(),
                                              self.lease_seconds)
            for task in await stage.prepare(self.reader, claimed) if claimed else []:
                if isinstance(task, Outcome):  # settled while preparing (e.g. its input is gone)
                    self._record(stage, [task])
                else:
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
            self._room[stage.name].set()
            stats.queued = queue.qsize()
            held = {item.item_id for item, _ in batch}
            stats.held |= held
            try:
                if getattr(stage, "mark_started", False):
                    # durable before the work: a crash now counts against these items' budgets
                    await self.writer.run(lambda conn: mark_started(conn, stage.name, batch))
                outcomes = await self._process(stage, batch)
            finally:
                stats.held -= held
            self._record(stage, outcomes)

    async def _process(self, stage: Stage, batch: list[tuple[Claimed, Any]]) -> list[Outcome]:
        try:
            return await stage.process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_fatal(exc):  # no item's fault: stop the run rather than burn every budget
                raise
            if len(batch) > 1:  # find the row at fault: each alone, so only it pays
                return [outcome for task in batch for outcome in await self._process(stage, [task])]
            return [Outcome(batch[0][0], error=describe(exc), retryable=True)]  # a bug or a broken input

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
            stats.errors[failure_cause(outcome.error)] += 1
            stats.last_errors.append(f"{stage.name} #{outcome.item.item_id}: {outcome.error}")
        if not self._busy():
            self._quiet.set()

    async def _drain(self, timeout: float | None) -> None:
        """Stop claiming, give unstarted items back, let workers finish what they hold (for at
        most `timeout` seconds after a fatal fault; then what they still hold is given back too,
        uncharged: a fault that stops the run is no item's doing)."""
        for name, queue in self._queues.items():
            while not queue.empty():
                item, _ = queue.get_nowait()
                self.writer.submit([(RELEASE_SQL, (name, item.item_id))])
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while any(s.in_flight for s in self.stats.values()):
            if deadline is not None and loop.time() > deadline:
                # no await from here to the workers' cancellation: nothing settles these meanwhile
                for name, stats in self.stats.items():
                    self.writer.submit([(RELEASE_SQL, (name, item_id)) for item_id in sorted(stats.held)])
                return
            await asyncio.sleep(0.05)

    async def _watch_done(self, exit_when_done: bool) -> None:
        """Look whether all is done when the last outcome is recorded (a run exits as soon as
        its work is written), and on the poll clock for work that arrives or ends otherwise."""
        while exit_when_done and not self.stopping.is_set():
            if await self.idle():
                self.stop()
                break
            self._quiet.clear()
            await self._wait(self._quiet, self.poll_seconds)
        await self.stopping.wait()

    def _busy(self) -> bool:
        return any(s.in_flight or not self._queues[n].empty() for n, s in self.stats.items())

    async def idle(self) -> bool:
        """No work queued, in flight, unwritten or waiting in the store for these stages."""
        if self._busy():
            return False
        await self.writer.flush()
        for stage in self.stages:
            if await self._enqueue(stage):
                return False
        names = [s.name for s in self.stages]   # a stage name holds a model's file name: bound, never pasted
        rows = await fetch_all(self.reader, f"SELECT count(*) FROM jobs WHERE stage IN ({','.join('?' * len(names))}) "
                                            "AND state IN ('pending', 'leased')", names)
        return rows[0][0] == 0

    async def _wait(self, event: asyncio.Event, timeout: float | None = None) -> None:
        """Until `event` is set, the run stops or `timeout` seconds pass."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass
