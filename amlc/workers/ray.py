"""Workers as Ray actors: the store, the writer, the feeders and the dashboard stay on this
machine (the head); the engines run wherever the cluster has room.

    leave = connect("auto")                    # or "local", or the head's "host:port"
    pool = ray_pool(OcrSpec(), actors=None, gpus=0.25, ship=read_file)
    results = await pool.run(paths)            # the same contract as every WorkerPool
    pool.close(); leave()

Each actor builds its engine from the spec once. Inputs travel through Ray's object store
(`ship` turns one into what the engine reads, e.g. a file into its bytes, on this machine), so
the nodes share no filesystem. An actor that dies mid-batch (its process, or its whole node) is
replaced in the background; its batch is re-run one input at a time on the actors left
(`run_split`), and an input whose actor dies under it alone comes back `DIED`, retryable, so
its job spends a try and only an input that kills every actor ends up failed.

Ray is imported only here and only when asked for: a cluster started in this process must see
LOOPBACK_ENV before `import ray` to keep every service on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any, Callable, Sequence

from . import cores
from .base import DIED, BatchFailed, Failed, Handler, WorkerSpec, WorkerStats, describe, run_split
from .process import MAX_START_FAILURES, START_TIMEOUT, WorkerStartError, gave_up_starting

# With "0", Ray (on any OS) takes 127.0.0.1 as this node's address and listens there only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet of a cluster started here


def connect(address: str, num_cpus: int | None = None) -> Callable[[], None]:
    """Join the Ray cluster at `address` ("auto": the one `ray start` runs on this machine, or
    its head's "host:port"), or start one inside this process ("local": loopback only, no
    dashboard, `num_cpus` or every core). Returns what leaves it; a local cluster stops with it."""
    if address == "local":
        os.environ.setdefault(LOOPBACK_ENV, "0")
        # Ray runs workers at nice 15; a cluster that serves only this run gives its actors the
        # priority the process pool's workers have, or any other job on the machine starves them.
        os.environ.setdefault(NICENESS_ENV, "0")
    try:
        import ray
    except ImportError:
        raise WorkerStartError("--ray needs Ray: pip install -e '.[ray]' (on every node)") from None

    if ray.is_initialized():  # the run's second pool, or a caller that connected already
        return lambda: None
    _check_reachable(address)
    own = {"num_cpus": num_cpus or cores(), "include_dashboard": False} if address == "local" else {}
    # Joined from a thread, Ray leaves SIGTERM alone (the daemon handles it) and warns that it does.
    logging.getLogger("ray._private.worker").addFilter(_NoSigtermWarning())
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **own)
    except (ConnectionError, ValueError) as exc:
        raise WorkerStartError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                               "`ray start --head`, or use --ray local") from None
    return ray.shutdown


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A head given as host:port must answer at once: Ray itself keeps retrying for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", "local", ray://... and the like: Ray checks them itself, quickly
    try:
        socket.create_connection((host, int(port)), timeout).close()
    except OSError as exc:
        raise WorkerStartError(f"no Ray head answers at {address} ({exc}): check the address that "
                               "`ray start --head` printed, and that its port is open") from None


class _NoSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def actor_resources(gpus: float = 0.0) -> dict[str, float]:
    """What one actor reserves: a core for its single-threaded engine, and its share of a GPU."""
    return {"num_cpus": 1, "num_gpus": gpus}


def ray_pool(spec: WorkerSpec, actors: int | None, gpus: float = 0.0,
             ship: Callable[[Any], Any] | None = None, share: int = 1) -> "RayPool":
    """A pool on the cluster `connect` joined: `actors` actors (None: as many as it has room for
    now, split among `share` pools), refused at once when the whole cluster could not hold them."""
    import ray

    resources = actor_resources(gpus)
    if actors is None:
        free = ray.available_resources()
        actors = _room(resources, free) // share
        if actors < 1:
            raise WorkerStartError(f"the Ray cluster has no room for an actor needing {_needs(resources)} "
                                   f"(free: {_amounts(free)}): add nodes, or give fewer workers")
    elif _room(resources, total := ray.cluster_resources()) < actors:
        raise WorkerStartError(f"{actors} actors needing {_needs(resources)} each do not fit on the Ray "
                               f"cluster ({_amounts(total)} in all): add nodes, or give fewer workers")
    return RayPool(spec, actors, resources, ship)


def _room(resources: dict[str, float], free: dict[str, float]) -> int:
    """How many actors reserving `resources` fit in `free` (Ray's resource names)."""
    need = {"CPU": resources["num_cpus"], "GPU": resources["num_gpus"]}
    return min(int(free.get(name, 0.0) / amount + 1e-9) for name, amount in need.items() if amount)


class AmlcWorker:
    """One engine in a Ray actor, built once from its spec; fed one batch at a time."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.handler: Handler | None = None
        self.error: str | None = None
        try:
            self.handler = spec.build()
        except Exception as exc:  # reported by ready(), so the pool can say why it cannot start
            self.error = describe(exc)

    def ready(self) -> tuple[str, str | None]:
        """(where this actor runs, why its engine could not be built or None)."""
        import ray

        return f"{ray.util.get_node_ip_address()} pid {os.getpid()}", self.error

    def run(self, *inputs: Any) -> tuple[str, Any]:
        assert self.handler is not None
        try:
            return "ok", self.handler(list(inputs))
        except Exception as exc:  # a bad input or a bug: the pool splits the batch
            return "error", describe(exc)


@cache
def _remote_class() -> Any:
    import ray

    return ray.remote(AmlcWorker)


@cache
def _lost() -> tuple[type[BaseException], ...]:
    """The errors that say an actor is gone with the batch it held: its process or node died."""
    from ray import exceptions as rx

    return (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError)


class _Actor:
    """One place in the pool: its current actor, where it runs, what it did, its replacements."""

    def __init__(self, spec: WorkerSpec, resources: dict[str, float]) -> None:
        self.spec, self.resources = spec, resources
        self.handle: Any = None
        self.ready: Any = None  # ObjectRef of the actor's ready() reply
        self.where = "not placed yet"
        self.state = "starting"
        self.done = 0
        self.restarts = 0
        self.broken: str | None = None  # why its last replacement could not start
        self.start_failures = 0         # replacements in a row that could not start

    def start(self) -> None:
        self.handle = _remote_class().options(**self.resources).remote(self.spec)
        self.ready = self.handle.ready.remote()
        self.state = "starting"

    def placed(self, reply: tuple[str, str | None]) -> str | None:
        """Record the ready() reply; returns why the engine could not be built, if it could not."""
        self.where, error = reply
        self.state = "idle" if error is None else f"could not start: {error}"
        return error

    def kill(self) -> None:
        import ray

        if self.handle is not None:
            try:
                ray.kill(self.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone with its node, or Ray is shutting down
                pass
            self.handle = None


class RayPool:
    """`size` actors built from one spec, each reserving `resources` (Ray's num_cpus/num_gpus).

    Called from the event loop: actor calls are awaited there. `ship(input)` runs on this
    machine, in a thread, before an input enters the object store (None: inputs as they are).
    """

    def __init__(self, spec: WorkerSpec, actors: int, resources: dict[str, float],
                 ship: Callable[[Any], Any] | None = None, start_timeout: float = START_TIMEOUT) -> None:
        if actors < 1:
            raise ValueError(f"a Ray pool needs at least one actor, got {actors}")
        self.size = actors
        self._ship = ship
        self._start_timeout = start_timeout   # for replacements too: a respawn never hangs the pool
        self._respawns: set[asyncio.Task] = set()
        self._actors = [_Actor(spec, resources) for _ in range(actors)]
        for actor in self._actors:
            actor.start()  # all load their engines at once, wherever they are placed
        try:
            self._wait_started(start_timeout)
        except WorkerStartError:
            self.close()
            raise
        self._idle: asyncio.Queue[_Actor] = asyncio.Queue()
        for actor in self._actors:
            self._idle.put_nowait(actor)

    def _wait_started(self, timeout: float) -> None:
        import ray

        try:
            replies = ray.get([actor.ready for actor in self._actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise WorkerStartError(f"{self.size} Ray actor(s) not placed and started within {timeout:.0f} s "
                                   f"(free on the cluster: {_amounts(ray.available_resources())})") from None
        except _lost() as exc:
            raise WorkerStartError(f"a Ray actor died while starting: {type(exc).__name__}") from None
        for actor, reply in zip(self._actors, replies):
            if (error := actor.placed(reply)) is not None:
                raise WorkerStartError(f"worker on {actor.where} could not start: {error}")

    async def run(self, inputs: Sequence[Any]) -> list[Any]:
        # Reading files and copying into the object store block: off the event loop.
        shipped = await asyncio.to_thread(lambda: [self._put(one) for one in inputs])
        answers = iter(await run_split(self._submit, [s for s in shipped if not isinstance(s, Failed)]))
        return [s if isinstance(s, Failed) else next(answers) for s in shipped]

    def _put(self, one: Any) -> Any:
        """The input's ObjectRef, put once: a batch re-run one by one reuses it."""
        import ray

        try:
            return ray.put(self._ship(one) if self._ship else one)
        except OSError as exc:  # the file went away since it was claimed: retried later
            return Failed(describe(exc))

    async def _submit(self, batch: list[Any]) -> list[Any]:
        actor = await self._idle.get()
        if actor.broken is not None:  # its replacement could not start: try another one
            why, actor.broken = actor.broken, None
            actor.start_failures += 1
            if actor.start_failures >= MAX_START_FAILURES:
                raise gave_up_starting(why, actor.start_failures)
            self._replace(actor)
            raise BatchFailed(why)
        actor.state, handle, where = "busy", actor.handle, actor.where
        try:
            # Top-level ObjectRef arguments reach the actor as their values.
            kind, payload = await handle.run.remote(*batch)
        except _lost() as exc:
            if actor.handle is handle:  # not replaced yet (by a batch queued behind this one)
                self._replace(actor)
            raise BatchFailed(f"{DIED} (Ray actor on {where}: {type(exc).__name__})") from None
        except BaseException:  # cancelled: the actor finishes that batch before its next one
            self._release(actor)
            raise
        self._release(actor)
        if kind == "ok":
            actor.done += len(batch)
            return payload
        raise BatchFailed(payload)

    def _release(self, actor: _Actor) -> None:
        actor.state = "idle"
        self._idle.put_nowait(actor)

    def _replace(self, actor: _Actor) -> None:
        """A new actor in the dead one's place, started in the background; the place serves
        again once it is up (on a cluster short of room, when room comes back)."""
        actor.kill()
        actor.restarts += 1
        actor.state = "restarting"
        task = asyncio.create_task(self._respawn(actor), name="ray-respawn")
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, actor: _Actor) -> None:
        try:
            actor.start()
            error = actor.placed(await asyncio.wait_for(actor.ready, self._start_timeout))
        except asyncio.TimeoutError:
            error = actor.placed((actor.where, f"not placed and started within {self._start_timeout:.0f} s"))
        except Exception as exc:  # noqa: BLE001 - its node died too, or the head lost Ray
            error = actor.placed((actor.where, describe(exc)))
        if error is not None:
            actor.broken = f"worker on {actor.where} could not start: {error}"
        else:
            actor.start_failures = 0
        self._idle.put_nowait(actor)

    def stats(self) -> list[WorkerStats]:
        return [WorkerStats(a.where, a.state, a.done, a.restarts) for a in self._actors]

    def close(self) -> None:
        for task in self._respawns:
            task.cancel()
        for actor in self._actors:
            actor.kill()


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(name, 0.0):g} {name}" for name in ("CPU", "GPU"))


def _needs(resources: dict[str, float]) -> str:
    return _amounts({"CPU": resources["num_cpus"], "GPU": resources["num_gpus"]})


def read_file(path: Any) -> bytes:
    """An image as the OCR actors get it: its bytes, read on this machine."""
    return Path(path).read_bytes()
