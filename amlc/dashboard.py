"""What a user watching `amlc run` sees: a live rich view on a terminal, log lines elsewhere.

Totals come from the store (the whole job, across restarts); rates, retries and errors from
this process's engine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiosqlite
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .engine import Engine
from .store import fetch_all
from .workers.base import WorkerStats

LIVE = ("idle", "busy")  # worker states that count as live


@dataclass
class StageCounts:
    pending: int = 0
    leased: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.leased + self.done + self.failed


async def store_counts(reader: aiosqlite.Connection) -> dict[str, StageCounts]:
    """Jobs per stage and state, from the counts the schema's triggers keep (the stage_counts
    view): a few rows to read at every refresh, whatever the size of the store."""
    counts: dict[str, StageCounts] = {}
    for row in await fetch_all(reader, "SELECT stage, state, n FROM stage_counts"):
        setattr(counts.setdefault(row["stage"], StageCounts()), row["state"], row["n"])
    return counts


class Dashboard:
    """Refreshes until cancelled; `live=False` prints one plain line per interval instead."""

    def __init__(self, engine: Engine, reader: aiosqlite.Connection, live: bool,
                 interval: float = 0.5, console: Console | None = None) -> None:
        self.engine = engine
        self.reader = reader
        self.live = live
        self.interval = interval
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self.progress = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>9}"), TimeRemainingColumn(),
                                 console=self.console)
        self.bars: dict[str, TaskID] = {s.name: self.progress.add_task(s.name, total=None, rate="")
                                        for s in engine.stages}

    @property
    def header(self) -> str:
        """What runs each stage that says (OCR: engine, runtime, device)."""
        return " | ".join(f"{s.name}: {s.describe}" for s in self.engine.stages if getattr(s, "describe", ""))

    async def run(self) -> None:
        if not self.live:
            if self.header:
                self.console.print(self.header, markup=False, highlight=False)
            while True:
                await asyncio.sleep(self.interval)
                self.console.print(await self.line(), markup=False, highlight=False)
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            while True:
                live.update(await self.view())
                await asyncio.sleep(self.interval)

    def rate(self, name: str) -> float:
        return self.engine.stats[name].done / max(time.monotonic() - self.started, 1e-9)

    async def line(self) -> str:
        counts = await store_counts(self.reader)
        parts = []
        for name, stats in self.engine.stats.items():
            c = counts.get(name, StageCounts())
            parts.append(f"{name} {c.done + c.failed}/{c.total} ({c.failed} failed, "
                         f"{self.rate(name):.1f}/s, queue {stats.queued})")
        return f"[{time.monotonic() - self.started:7.0f}s] " + " | ".join(parts + self._worker_summary())

    async def view(self) -> Group:
        counts = await store_counts(self.reader)
        for name, bar in self.bars.items():
            c = counts.get(name, StageCounts())
            self.progress.update(bar, total=c.total or None, completed=c.done + c.failed,
                                 rate=f"{self.rate(name):.1f}/s")
        return Group(Text(self.header), self.progress, self._table(counts), *self._workers(), self._errors())

    def _table(self, counts: dict[str, StageCounts]) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("stage", "pending", "queued", "in flight", "done", "retries", "failed"):
            table.add_column(column, justify="right")
        for name, stats in self.engine.stats.items():
            c = counts.get(name, StageCounts())
            table.add_row(name, str(c.pending), str(stats.queued), str(stats.in_flight),
                          str(c.done), str(stats.retried), str(c.failed))
        return table

    def _errors(self) -> Table:
        table = Table(title="errors (this run)", title_justify="left", box=None, show_header=False)
        for stats in self.engine.stats.values():
            for reason, n in stats.errors.most_common(3):
                table.add_row(str(n), reason)
        for stats in self.engine.stats.values():
            for error in stats.last_errors:
                table.add_row("last", error[:110])
        return table

    # --- workers: pools that report them (Ray actors) ------------------------------------------

    def _worker_stats(self) -> list[tuple[str, list[WorkerStats]]]:
        """(stage, its workers) for every stage whose pool offers stats()."""
        found = []
        for stage in self.engine.stages:
            stats = getattr(getattr(stage, "pool", None), "stats", None)
            if stats is not None:
                found.append((stage.name, stats()))
        return found

    def _worker_summary(self) -> list[str]:
        return [f"{name} workers {sum(w.state in LIVE for w in workers)}/{len(workers)} live, "
                f"{sum(w.restarts for w in workers)} restarts"
                for name, workers in self._worker_stats()]

    def _workers(self) -> list[Table]:
        """Live workers, per-worker throughput and restarts; nothing for pools that do not say."""
        found = self._worker_stats()
        if not found:
            return []
        table = Table(title="workers", title_justify="left", box=None, pad_edge=False)
        for column in ("stage", "worker", "state", "done", "rate", "restarts"):
            table.add_column(column, justify="left" if column in ("worker", "state") else "right")
        elapsed = max(time.monotonic() - self.started, 1e-9)
        for name, workers in found:
            for w in workers:
                table.add_row(name, w.worker, w.state[:60], str(w.done), f"{w.done / elapsed:.2f}/s",
                              str(w.restarts))
        return [table]
