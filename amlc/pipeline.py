"""Assemble and run the daemon: open the store, build the chosen stages, run the engine with
its dashboard, and stop cleanly on SIGINT/SIGTERM (a second SIGINT stops at once) or on a
fatal fault, whose cause the result carries."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dashboard import Dashboard, StageCounts, store_counts
from .engine import Engine
from .faults import RunFailed
from .jobs import RetryPolicy
from .startup import settle_store
from .runlock import RunLock
from .store import open_reader, open_writer
from .workdir import Workdir
from .writer import STORE_WAIT, BatchWriter

if TYPE_CHECKING:
    from .ocr import Preprocess

ALL_STAGES = ("fetch", "ocr", "extract", "predict")  # predict runs only with a model


@dataclass(frozen=True)
class RunConfig:
    stages: tuple[str, ...] = ALL_STAGES
    exit_when_done: bool = False
    dashboard: bool = True           # live rich view; False prints log lines
    log_every: float = 10.0          # seconds between log lines without the dashboard
    fetch_workers: int = 128         # concurrent downloads
    per_host: int = 128              # per host: the CDN is one host, so at 100 ms an answer this
                                     # caps a run at ~1,280 images/s (32 capped it at 320)
    fetch_timeout: float = 30.0      # seconds of read silence before a download is retried
    ocr_engine: str = "rapidocr"
    ocr_runtime: str = "auto"        # onnxruntime | openvino | auto (OpenVINO on a CPU if installed)
    ocr_batch: int | None = None     # images per engine call; None: per device
    ocr_device: str = "cpu"          # "cuda" runs OCR on the GPU (onnxruntime-gpu)
    ocr_max_side: int | None = 1280  # shrink larger images to this longer side before OCR
    ocr_min_side: int | None = 800   # enlarge smaller images (thumbnails) to this longer side
    ocr_autocontrast: bool = False   # stretch faded labels' contrast before OCR
    ocr_reread_below: float | None = 0.9  # second pass on number lines read below this confidence
    ocr_workers: int | None = None   # OCR processes (0: one engine in a thread); None: per device
    max_attempts: int = 4            # tries per item and stage before it is marked failed
    backoff_base: float = 2.0        # seconds before a failed item is retried; doubles per try
    lease_seconds: float = 600.0     # a claim older than this belongs to a dead worker
    poll_seconds: float = 1.0        # how often idle stages look for newly ingested rows
    store_wait: float = STORE_WAIT   # seconds a store another program writes is waited for
    fetch_options: dict[str, Any] = field(default_factory=dict)  # extra FetchConfig fields
    local_images: Path | None = None # a folder of images already downloaded, named as in the links
    model: Path | None = None        # a GGUF model for the predict stage
    predict_split: str | None = None # answer only this split's samples with the model
    fallback: bool = True            # keep the rules' answer where the model abstains
    llm_workers: int | None = None   # llama.cpp processes (0: in a thread); None: per device
    gpu_layers: int | None = None    # layers offloaded to the GPU (-1 all); None: all if it can
    llm_batch: int | None = None     # rows a llama.cpp worker decodes together; None: per device
    ray: str | None = None           # run OCR/predict workers as actors on this Ray cluster
    ocr_gpus: float = 0.0            # with ray: each OCR actor's share of a GPU (0: CPU only)
    llm_gpus: float = 0.0            # with ray: GPUs per llama.cpp actor (0: CPU only)


def ocr_preprocess(config: RunConfig) -> Preprocess:
    """What the run does to each image before its OCR (bench/ocr.py reads with the same)."""
    from .ocr import Preprocess
    return Preprocess(max_side=config.ocr_max_side, min_side=config.ocr_min_side,
                      autocontrast=config.ocr_autocontrast, reread_below=config.ocr_reread_below)


async def _build_stages(config: RunConfig, workdir: Workdir, stack: AsyncExitStack) -> list[Any]:
    from .stages import ExtractStage, FetchStage, OcrStage

    policy = RetryPolicy(config.max_attempts, config.backoff_base)
    stages: list[Any] = []
    if "fetch" in config.stages:
        from .fetch import FetchConfig, Fetcher
        fetch_config = FetchConfig(concurrency=config.fetch_workers, per_host=config.per_host,
                                   read_timeout=config.fetch_timeout, local_root=config.local_images,
                                   **config.fetch_options)
        fetcher = await stack.enter_async_context(Fetcher(workdir.images, fetch_config))
        stages.append(FetchStage(fetcher, config.fetch_workers, policy, workdir.root, config.local_images))
    if "ocr" in config.stages:
        from .ocr import OcrSpec, default_ocr_batch, default_ocr_workers, resolve_runtime
        from .ocr.models import parse_device
        preprocess = ocr_preprocess(config)
        runtime = resolve_runtime(config.ocr_runtime, config.ocr_engine, parse_device(config.ocr_device).cuda)
        spec = OcrSpec(config.ocr_engine, config.ocr_device, preprocess, runtime=runtime)
        workers = default_ocr_workers(config.ocr_device) if config.ocr_workers is None else config.ocr_workers
        batch = default_ocr_batch(config.ocr_device) if config.ocr_batch is None else config.ocr_batch
        if config.ray:  # the driver reads each file: actors get bytes, no shared filesystem
            from .workers.ray import read_file
            share = 2 if "predict" in config.stages and config.model is not None else 1
            pool = await _start_ray_pool(config.ray, spec, config.ocr_workers, config.ocr_gpus, stack,
                                         read_file, share)
        else:
            pool = await _start_pool(spec, workers, stack)
        stages.append(OcrStage(pool, batch, policy, workdir.root,
                               f"{config.ocr_engine} on {runtime}, {config.ocr_device}"))
    if "extract" in config.stages:
        from .extract import Extractor
        stages.append(ExtractStage(Extractor.load(), config.ocr_engine, policy))
    if "predict" in config.stages and config.model is not None:
        from .llm.infer import LlmSpec, default_llm_workers, default_parallel, offloads
        from .predict import PredictStage
        gpu = offloads(config.gpu_layers)
        spec = LlmSpec(str(config.model), gpu_layers=config.gpu_layers,
                       parallel=config.llm_batch or default_parallel(gpu))
        workers = default_llm_workers(gpu) if config.llm_workers is None else config.llm_workers
        pool = (await _start_ray_pool(config.ray, spec, config.llm_workers, config.llm_gpus, stack)
                if config.ray else await _start_pool(spec, workers, stack))
        stages.append(PredictStage(config.model, pool, config.ocr_engine, policy, config.predict_split,
                                   config.fallback, max(PredictStage.batch, spec.parallel)))
    return stages


def _ranker() -> str:
    from .extract.choose import ranker_digest
    return ranker_digest()


async def _start_pool(spec: Any, workers: int, stack: AsyncExitStack) -> Any:
    """Engines load in their workers at once, off the event loop; the pool closes with the run."""
    from .workers import make_pool
    pool = await asyncio.to_thread(make_pool, spec, workers)
    stack.callback(pool.close)
    return pool


async def _start_ray_pool(address: str, spec: Any, actors: int | None, gpus: float, stack: AsyncExitStack,
                          ship: Any = None, share: int = 1) -> Any:
    """Engines as actors on a Ray cluster, joined once per run and left when it ends; actors
    None: as many as the cluster has room for, split among `share` pools."""
    from .workers.ray import connect, ray_pool
    stack.callback(await asyncio.to_thread(connect, address))
    pool = await asyncio.to_thread(ray_pool, spec, actors, gpus, ship, share)
    stack.callback(pool.close)
    return pool


@dataclass
class RunResult:
    engine: Engine
    counts: dict[str, StageCounts]  # what the store holds at the end, per stage
    fatal: str | None = None        # why the run stopped on its own; None after a normal stop

    def raise_if_failed(self) -> "RunResult":
        if self.fatal is not None:
            raise RunFailed(self.fatal)
        return self


async def run_pipeline(workdir: Workdir, config: RunConfig) -> RunResult:
    # A write past `ulimit -f` then fails with EFBIG (a fault we report) instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with RunLock(workdir.run_lock):
        async with AsyncExitStack() as stack:
            conn = await open_writer(workdir.store)
            stack.push_async_callback(conn.close)
            # We hold the run lock, so every lease left in the store is a dead process's.
            await settle_store(conn, workdir, config.max_attempts,
                               config.ocr_engine if "ocr" in config.stages else None,
                               _ranker() if "extract" in config.stages else None)
            reader = await open_reader(workdir.store)
            stack.push_async_callback(reader.close)
            writer = await stack.enter_async_context(BatchWriter(conn, store_wait=config.store_wait))
            engine = Engine(await _build_stages(config, workdir, stack), writer, reader,
                            config.lease_seconds, config.poll_seconds, workdir.root)
            live = config.dashboard and sys.stderr.isatty()
            dashboard = Dashboard(engine, reader, live, 0.5 if live else config.log_every)
            await _run_with_signals(engine, dashboard, config.exit_when_done)
            return RunResult(engine, await _counts(reader), engine.fatal)


async def _counts(reader: Any) -> dict[str, StageCounts]:
    try:
        return await store_counts(reader)
    except Exception:  # the store is unreadable: the fault already says why
        return {}


async def _run_with_signals(engine: Engine, dashboard: Dashboard, exit_when_done: bool) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if engine.stopping.is_set() and signum == signal.SIGINT and main:
            main.cancel()  # second Ctrl-C: stop now; what was committed stays committed
            return
        dashboard.console.print("stopping: finishing work in flight (Ctrl-C again to stop at once)")
        engine.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await engine.run(exit_when_done, dashboard.run())
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if not dashboard.live and engine.fatal is None:
            dashboard.console.print(await dashboard.line(), markup=False, highlight=False)
