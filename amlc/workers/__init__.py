"""Where a stage's work runs: engines in worker processes (every core, the GPU) or in one thread.

Stages say *what* to do and hand batches to a pool; the pool says *where*:

    pool = make_pool(OcrSpec("rapidocr"), workers=4)   # 4 processes, one OCR engine each
    results = await pool.run([path1, path2])            # from the event loop; result or Failed
    pool.close()

A spec is a small picklable recipe (`WorkerSpec.build() -> handler`); each worker builds its
engine from it once. `run` never raises for a bad input or a dead worker: a batch that fails as a
whole is re-run one input at a time, and an input that still fails gets a `Failed` (a worker
that died gets `DIED`, retryable). Any backend offering `size`, `run` and `close` (`WorkerPool`)
plugs into the stages the same way.
"""

from __future__ import annotations

import os

from .base import DIED, Failed, Handler, WorkerPool, WorkerSpec
from .process import ProcessPool, WorkerStartError
from .thread import ThreadPool

__all__ = ["DIED", "Failed", "Handler", "ProcessPool", "ThreadPool", "WorkerPool", "WorkerSpec",
           "WorkerStartError", "cores", "make_pool"]


def cores() -> int:
    """CPU cores this process may use (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0))


def make_pool(spec: WorkerSpec, workers: int) -> WorkerPool:
    """workers=0: one engine in a thread of this process; N >= 1: N worker processes.

    Blocks until every worker has loaded its engine; raises WorkerStartError if one cannot.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (in this process) or more, got {workers}")
    return ThreadPool(spec) if workers == 0 else ProcessPool(spec, workers)
