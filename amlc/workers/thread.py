"""One engine in one thread of this process: `--ocr-workers 0` / `--llm-workers 0`, and tests."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from .base import BatchFailed, WorkerSpec, describe, run_split


class ThreadPool:
    """Builds the engine here and runs every batch in one dedicated thread (engines are not
    thread-safe), off the event loop. A crash in the engine's C code takes this process down
    with it; the process pool is the one that survives that."""

    size = 1

    def __init__(self, spec: WorkerSpec) -> None:
        self.handler = spec.build()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amlc-engine")

    async def run(self, inputs: Sequence[Any]) -> list[Any]:
        return await run_split(self._submit, inputs)

    async def _submit(self, batch: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self.handler, batch)
        except Exception as exc:  # a bad input or a bug: the batch is split, then recorded per item
            raise BatchFailed(describe(exc)) from exc

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
