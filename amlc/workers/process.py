"""Worker processes, each owning one engine for its whole life, fed one batch at a time.

The daemon is asyncio plus threads, so children are started with 'spawn' (a fork would copy the
event loop, its threads and their locks). Each worker has its own pipe and holds at most one
batch, so the pool knows exactly which inputs a dead worker held: those are re-run one by one
(`run_split`), a replacement process is started, and an input that kills its worker alone
comes back as `DIED`.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Sequence

from .base import DIED, BatchFailed, Handler, WorkerSpec, WorkerStats, describe, run_split

START_TIMEOUT = 900.0  # seconds for a worker to load its engine (a large GGUF from a cold disk)
STOP_TIMEOUT = 5.0
TEST_EXIT_ENV = "AMLC_TEST_WORKER_EXIT_ON"
TEST_START_ONCE_ENV = "AMLC_TEST_WORKER_START_ONCE"   # test-only: a file; workers start once only
MAX_START_FAILURES = 3  # starts of one worker in a row that fail before the pool gives up (the run stops)


class WorkerStartError(RuntimeError):
    """A worker could not build its engine (the child's exception, as text). Raised while a run
    works (a replacement failed MAX_START_FAILURES times in a row), it stops the run: no input
    is at fault, so none should pay a try for it."""


def gave_up_starting(why: str, failures: int) -> WorkerStartError:
    return WorkerStartError(f"{why} ({failures} starts in a row failed, so the pool gave up)")


class ProcessPool:
    """`size` worker processes built from one spec. `run` is called from the event loop; the
    blocking pipe round trips run in this pool's own threads, one per worker."""

    def __init__(self, spec: WorkerSpec, size: int, start_timeout: float = START_TIMEOUT) -> None:
        if size < 1:
            raise ValueError(f"a process pool needs at least one worker, got {size}")
        context = mp.get_context("spawn")
        self.size = size
        self._workers = [_Worker(context, spec, start_timeout) for _ in range(size)]
        for worker in self._workers:
            worker.start()  # all load their engines at once
        try:
            for worker in self._workers:
                worker.wait_ready()
        except WorkerStartError:
            self.close()
            raise
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="amlc-pool")

    def stats(self) -> list[WorkerStats]:
        """Each worker for the dashboard: its process, state, inputs answered, replacements."""
        return [WorkerStats(f"pid {w.process.pid if w.process else '-'}", w.state, w.done, w.restarts)
                for w in self._workers]

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None and w.process.pid]

    async def run(self, inputs: Sequence[Any]) -> list[Any]:
        return await run_split(self._submit, inputs)

    async def _submit(self, batch: list[Any]) -> list[Any]:
        worker = await self._idle.get()
        future = asyncio.get_running_loop().run_in_executor(self._threads, worker.call, batch)
        # The worker is free again only when its round trip has ended, even if our caller was
        # cancelled meanwhile: a second batch on the same pipe would read the first one's reply.
        future.add_done_callback(lambda _: self._idle.put_nowait(worker))
        return await asyncio.shield(future)

    def close(self) -> None:
        for worker in self._workers:
            worker.ask_to_stop()
        for worker in self._workers:
            worker.stop()
        if hasattr(self, "_threads"):
            self._threads.shutdown(wait=False, cancel_futures=True)


class _Worker:
    """One child process and the pipe to it; one batch at a time, from one pool thread."""

    def __init__(self, context: SpawnContext, spec: WorkerSpec, start_timeout: float) -> None:
        self._context = context
        self._spec = spec
        self._start_timeout = start_timeout
        self.process: SpawnProcess | None = None
        self._conn: Connection | None = None
        # Taken to hand the process over: a pool thread burying a dead child and close() stopping
        # it may both find it ended at once; exactly one of them reaps it.
        self._handover = threading.Lock()
        self.closing = False
        self.state = "starting"
        self.done = 0
        self.restarts = 0
        self.start_failures = 0  # replacements in a row that could not start

    def start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=serve, args=(self._spec, child), name="amlc-worker",
                                        daemon=True)
        process.start()
        child.close()  # the child holds its own copy; ours would hide its death from recv
        with self._handover:
            self.process, self._conn = process, parent

    def wait_ready(self) -> None:
        kind, payload = self._receive(self._start_timeout)
        if kind != "ready":
            self.state = f"could not start: {payload}"
            raise WorkerStartError(f"worker could not start: {payload}")
        self.state = "idle"

    def call(self, batch: list[Any]) -> list[Any]:
        if self.closing:
            raise BatchFailed("the pool is closing")
        if self.process is None:  # the previous one died: replace it before this batch
            self.restarts += 1
            self.state = "restarting"
            self.start()
            try:
                self.wait_ready()
            except WorkerStartError as exc:
                self.start_failures += 1
                if self.start_failures >= MAX_START_FAILURES:
                    raise gave_up_starting(str(exc), self.start_failures) from None
                raise BatchFailed(str(exc)) from exc
            self.start_failures = 0
        conn = self._conn
        self.state = "busy"
        try:
            if conn is None:
                raise OSError("closed")
            conn.send(batch)
        except OSError:
            raise BatchFailed(self._bury()) from None
        kind, payload = self._receive(None)
        if kind != "died":
            self.state = "idle"
        if kind != "ok":
            raise BatchFailed(payload)
        self.done += len(batch)
        return payload

    def _receive(self, timeout: float | None) -> tuple[str, Any]:
        """The child's next message, or ("died", why) if it ended (or timed out) first."""
        conn, process = self._conn, self.process
        if conn is None or process is None:
            return "died", "the pool is closing"
        try:
            ready = wait([conn, process.sentinel], timeout)
            if conn in ready:  # read even if it also died: its last reply may be complete
                return conn.recv()
        except (EOFError, OSError):  # died, or close() closed the pipe under us
            pass
        else:
            if not ready:
                process.kill()
                return "died", f"no answer within {timeout:.0f} s; {self._bury()}"
        return "died", self._bury()

    def _take(self) -> tuple[SpawnProcess | None, Connection | None]:
        """The process and its pipe, now no longer this worker's: whoever takes them ends them."""
        with self._handover:
            taken = self.process, self._conn
            self.process, self._conn = None, None
        return taken

    def _bury(self) -> str:
        """Reap the dead child and say how it ended; the next call starts a new one."""
        process, conn = self._take()
        if process is None or conn is None:
            return f"{DIED} (stopped by the pool closing)"
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()
        self.state = f"died ({_exit_reason(process.exitcode)})"
        return f"{DIED} ({_exit_reason(process.exitcode)})"

    def ask_to_stop(self) -> None:
        self.closing = True  # no replacement starts from now on
        conn = self._conn
        if conn is not None:
            try:
                conn.send(None)
            except OSError:
                pass

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        process.join(STOP_TIMEOUT)  # not taken yet: a batch that ends meanwhile is still answered
        process, conn = self._take()
        if process is None:  # a pool thread found it dead and buried it
            return
        if process.is_alive():  # busy with a batch nobody waits for any more
            process.terminate()
            process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        if conn is not None:
            conn.close()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def serve(spec: WorkerSpec, conn: Connection) -> None:
    """The child: build the engine once, then answer batches until told to stop or orphaned."""
    # Ctrl-C reaches the whole process group; the daemon decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _fail_if_started_before()
        handler: Handler = spec.build()
    except BaseException as exc:  # noqa: BLE001 - reported to the pool, which refuses to start
        conn.send(("fatal", describe(exc)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            batch = conn.recv()
        except EOFError:  # the daemon is gone (kill -9): nobody wants the answers
            return
        if batch is None:
            return
        _exit_if_asked(batch)
        try:
            reply = ("ok", handler(batch))
        except Exception as exc:  # a bad input or a bug: the pool splits the batch
            reply = ("error", describe(exc))
        try:
            conn.send(reply)
        except OSError:  # the daemon died while we worked
            return


def _fail_if_started_before() -> None:
    """Test-only hook: with $AMLC_TEST_WORKER_START_ONCE naming a file, the first worker to start
    makes it and every later one fails to start, as a worker whose model went away would."""
    marker = os.environ.get(TEST_START_ONCE_ENV)
    if marker:
        try:
            open(marker, "x").close()
        except FileExistsError:
            raise RuntimeError("this worker may start only once (test hook)") from None


def _exit_if_asked(batch: list[Any]) -> None:
    """Test-only hook: die at once, as a segfault would, on an input naming $AMLC_TEST_WORKER_EXIT_ON."""
    marker = os.environ.get(TEST_EXIT_ENV)
    if marker and any(marker in str(item) for item in batch):
        os._exit(70)
