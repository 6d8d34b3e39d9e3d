"""What every worker pool offers a stage, whatever runs the work (a thread, processes, Ray actors)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence

# Inputs a worker held when its process ended (segfault, OOM kill, os._exit) get DIED, the words
# the store records for work a dead daemon held: retryable, so their budgets count the attempt.
from ..jobs import DIED

Handler = Callable[[Sequence[Any]], list[Any]]  # one output per input, in order


class WorkerSpec(Protocol):
    """A small picklable recipe for a worker's engine (an OCR engine, a llama.cpp model).

    A pool calls `build()` once in each worker and then feeds batches to the handler it
    returns, so the engine is loaded once per worker, wherever that worker runs.
    """

    def build(self) -> Handler: ...


@dataclass(frozen=True)
class Failed:
    """One input's error, in place of its result: `error` is what the job records."""

    error: str
    retryable: bool = True


class WorkerPool(Protocol):
    """Where a stage's batches run. `size` batches run at once (the stage keeps that many in
    flight); `run` never raises for a bad input or a dead worker: that input gets a `Failed`."""

    size: int

    async def run(self, inputs: Sequence[Any]) -> list[Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerStats:
    """One worker as the dashboard shows it; a pool that can say offers `stats() -> [WorkerStats]`."""

    worker: str    # where it runs, e.g. "10.0.0.7 pid 4242"
    state: str     # starting, idle, busy, restarting, or why it could not start
    done: int      # inputs answered since the pool started, its replacements included
    restarts: int  # times it was replaced after dying


class BatchFailed(Exception):
    """A whole batch failed: the handler raised, or the worker running it died."""

    def __init__(self, error: str, retryable: bool = True) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable


def describe(exc: BaseException) -> str:
    """An exception as the job's last_error shows it (the dashboard groups by the part before ':')."""
    return f"{type(exc).__name__}: {exc}"[:500]


async def run_split(submit: Callable[[list[Any]], Awaitable[list[Any]]], inputs: Sequence[Any]) -> list[Any]:
    """Run a batch; when it fails as a whole, run its inputs one by one, so only the bad one
    (a broken file, an image that kills its worker) fails and the others are done this time."""
    batch = list(inputs)
    if not batch:
        return []
    try:
        return await submit(batch)
    except BatchFailed as exc:
        if len(batch) == 1:
            return [Failed(exc.error, exc.retryable)]
    singles = await asyncio.gather(*(run_split(submit, [one]) for one in batch))
    return [result for [result] in singles]
