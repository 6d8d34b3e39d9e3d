"""`amlc run`: the long-running daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from pathlib import Path
from typing import Callable

import click

from ..jobs import retry_failed as retry_failed_jobs
from ..dashboard import StageCounts
from ..faults import is_fatal
from ..ocr.models import parse_device
from ..ocr.runtime import RUNTIMES, check_runtime
from ..pipeline import ALL_STAGES, RunConfig, RunResult, ocr_preprocess, run_pipeline
from ..runlock import AlreadyRunning
from ..workers import WorkerStartError
from .common import console, run_async, using_store, workdir


existing_gguf = click.Path(exists=True, dir_okay=False, path_type=Path)


def llm_options(command: click.Command) -> click.Command:
    """--llm-workers, --llm-batch and --gpu-layers, shared by `amlc run --model` and `amlc predict`."""
    command = click.option(
        "--llm-batch", type=click.IntRange(min=1), default=None,
        help="Rows one llama.cpp worker takes together: their options scored in one batch "
             "(the same scores as one by one), rows without options written together, each "
             "under its own grammar. Default: 64 when the model is offloaded to a GPU, else 1 "
             "(rows one by one, reusing shared prompt prefixes: on a CPU, rows together measured "
             "slower, bench/infer.py).")(command)
    command = click.option(
        "--gpu-layers", type=int, default=None,
        help="Model layers offloaded to the GPU (-1: all). Default: all when llama.cpp was built "
             "with GPU support, else 0.")(command)
    return click.option(
        "--llm-workers", type=click.IntRange(min=0), default=None,
        help="llama.cpp processes of one thread each (0: one engine inside this process). "
             "Default: one per core on a CPU, 2 when the model is offloaded to a GPU.")(command)


def ray_options(*kinds: str) -> Callable[[click.Command], click.Command]:
    """--ray ADDRESS, and --<kind>-gpus for each kind of actor ("ocr", "llm")."""
    def add(command: click.Command) -> click.Command:
        for kind in kinds:
            command = click.option(
                f"--{kind}-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
                help=f"With --ray: GPUs each {'OCR' if kind == 'ocr' else 'llama.cpp'} actor reserves "
                     "(0.25: four share one GPU; 0: it runs on a CPU core).")(command)
        return click.option(
            "--ray", "ray_address", metavar="ADDRESS", default=None,
            help="Run the OCR and predict workers as actors on a Ray cluster (needs the ray extra): "
                 "auto (the cluster `ray start` runs on this machine), HOST:PORT (its head), or local "
                 "(start one inside this run, on 127.0.0.1 only). The store, downloads and rules stay "
                 "here; images reach the actors as bytes. --ocr-workers/--llm-workers then count "
                 "actors (default: as many as the cluster has room for).")(command)
    return add


def with_ray(config: RunConfig, address: str | None, ocr_gpus: float = 0.0, llm_gpus: float = 0.0) -> RunConfig:
    """The run on a Ray cluster: Ray hands each actor its GPU share (it is 'cuda' in there), and
    llama.cpp leaves alone any GPU its actor was not given."""
    if address is None:
        if ocr_gpus or llm_gpus:
            raise click.UsageError("--ocr-gpus and --llm-gpus are actor resources: they need --ray")
        return config
    if 0 in (config.ocr_workers, config.llm_workers):
        raise click.UsageError("with --ray, workers are actors: give 1 or more, or leave the default")
    if config.ocr_device != "cpu" and not ocr_gpus:
        raise click.UsageError("with --ray, give each OCR actor a GPU share with --ocr-gpus (e.g. 0.25) "
                               "instead of --ocr-device")
    gpu_layers = 0 if not llm_gpus and config.gpu_layers is None else config.gpu_layers
    return dataclasses.replace(config, ray=address, ocr_gpus=ocr_gpus, llm_gpus=llm_gpus,
                               ocr_device="cuda" if ocr_gpus else "cpu", gpu_layers=gpu_layers)


def _stages(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in ALL_STAGES]
    if unknown or not names:
        raise click.BadParameter(f"choose from {','.join(ALL_STAGES)}; got {value!r}")
    return names


@click.command("run")
@click.option("--stages", default=",".join(ALL_STAGES), show_default=True, callback=_stages,
              help="Comma-separated stages to run.")
@click.option("--exit-when-done", is_flag=True,
              help="Stop once the chosen stages have no work left (for scripts). Without it, "
                   "amlc run keeps waiting for newly ingested rows.")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
@click.option("--log-every", default=10.0, show_default=True, help="Seconds between log lines.")
@click.option("--concurrency", default=128, show_default=True, help="Concurrent downloads.")
@click.option("--per-host", default=128, show_default=True,
              help="Concurrent downloads per host (the image CDN is one host, so this caps the "
                   "rate at about per-host / latency images/s).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds of silence before a download is retried.")
@click.option("--local-images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of images already on disk: used instead of downloading where a regular "
                   "file there is named as in the link (<id>.jpg), and the only folder that "
                   "file:// links and paths (see `amlc ingest --local-images`) are read from.")
@click.option("--min-free-mb", default=64.0, show_default=True,
              help="Stop downloading, with the cause, when the work folder's disk has less than "
                   "this many MB free: the store keeps room to record every image already fetched.")
@click.option("--store-wait", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait while another program (an `amlc ingest` beside the run) holds "
                   "the store's write lock before the run stops with that cause.")
@click.option("--fetch-retries", default=4, show_default=True,
              help="Quick retries inside one download attempt (transient HTTP errors, timeouts).")
@click.option("--ocr-engine", type=click.Choice(["rapidocr", "paddleocr"]), default="rapidocr", show_default=True,
              help="rapidocr: the light CPU default; paddleocr: the GPU path.")
@click.option("--ocr-runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="What runs the OCR models: auto is OpenVINO for rapidocr on a CPU (about half "
                   "onnxruntime's CPU per photo, the same numbers read; see docs/performance.md) "
                   "and onnxruntime otherwise (its CUDA provider on a GPU; PaddleOCR always).")
@click.option("--ocr-batch", type=click.IntRange(min=1), default=None,
              help="Images per OCR engine call. Default: 2 on a CPU, 16 on a GPU.")
@click.option("--ocr-device", default="cpu", show_default=True,
              help="cpu, or cuda / cuda:N for the GPU (needs the gpu extra's onnxruntime-gpu).")
@click.option("--ocr-max-side", default=1280, show_default=True,
              help="Shrink images whose longer side exceeds this many pixels before OCR (0: never).")
@click.option("--ocr-min-side", type=click.IntRange(min=0), default=800, show_default=True,
              help="Enlarge images whose longer side is below this many pixels before OCR (0: never): "
                   "the detector misses the small print of thumbnails, 61% of the test images. "
                   "Dimension photos F1 0.739 -> 0.786 (cross-validated); a run on the test "
                   "images 0.79x as fast (docs/accuracy.md).")
@click.option("--ocr-autocontrast", is_flag=True, help="Stretch the contrast of faded labels before OCR.")
@click.option("--ocr-reread-below", type=click.FloatRange(0.0, 1.0), default=0.9, show_default=True,
              help="Second pass: read again, cut from the full-size image and upscaled 2x, every "
                   "line holding a digit that the first pass read below this confidence (0: off; "
                   "on real photos +0.8 points of rows with their number in the text for ~6-13% "
                   "more OCR time).")
@click.option("--ocr-workers", type=click.IntRange(min=0), default=None,
              help="OCR processes, one engine and one thread each (0: one engine inside this "
                   "process). Default: one per core on a CPU, 4 per GPU with --ocr-device cuda.")
@click.option("--max-attempts", default=4, show_default=True,
              help="Tries per item and stage before it is marked failed; each try of a download "
                   "makes up to 1 + --fetch-retries requests.")
@click.option("--backoff", default=2.0, show_default=True, help="Seconds before the first retry; doubles per try.")
@click.option("--retry-failed", is_flag=True, help="Give failed items a fresh retry budget first.")
@click.option("--model", type=existing_gguf, default=None,
              help="A GGUF model: adds the predict stage (llama.cpp) after the rules.")
@llm_options
@ray_options("ocr", "llm")
@click.pass_context
def run_command(ctx: click.Context, stages: tuple[str, ...], exit_when_done: bool, no_dashboard: bool,
                log_every: float, concurrency: int, per_host: int, timeout: float,
                local_images: Path | None, min_free_mb: float, store_wait: float, fetch_retries: int,
                ocr_engine: str, ocr_runtime: str,
                ocr_batch: int | None,
                ocr_device: str, ocr_max_side: int, ocr_min_side: int, ocr_autocontrast: bool,
                ocr_reread_below: float, max_attempts: int,
                backoff: float, retry_failed: bool, model: Path | None, ocr_workers: int | None,
                llm_workers: int | None, llm_batch: int | None, gpu_layers: int | None,
                ray_address: str | None, ocr_gpus: float, llm_gpus: float) -> None:
    """Download, OCR and extract every ingested sample, resumably.

    Each image is downloaded once (duplicate links share it), OCR'd once per engine, and
    every sample gets the rules' answer. State lives in the store: kill it at any point and
    run it again to carry on where it stopped. Ctrl-C finishes the work in flight and exits;
    a second Ctrl-C exits at once. Watch it from another terminal with `amlc status`.

    \b
    Examples:
      amlc run                                  # keeps running, picks up new ingests
      amlc run --exit-when-done --no-dashboard  # for scripts
      amlc run --stages fetch --concurrency 256 --per-host 256
      amlc run --ocr-workers 16                 # 16 OCR processes on a 16-core machine
      amlc run --ray auto --ocr-gpus 0.25       # OCR actors on a Ray cluster, 4 per GPU
    """
    config = RunConfig(stages=stages, exit_when_done=exit_when_done, dashboard=not no_dashboard,
                       log_every=log_every, fetch_workers=concurrency, per_host=per_host,
                       fetch_timeout=timeout, ocr_engine=ocr_engine, ocr_runtime=ocr_runtime,
                       ocr_batch=ocr_batch,
                       ocr_device=ocr_device, ocr_max_side=ocr_max_side or None,
                       ocr_min_side=ocr_min_side or None,
                       ocr_autocontrast=ocr_autocontrast, ocr_reread_below=ocr_reread_below or None,
                       ocr_workers=ocr_workers,
                       max_attempts=max_attempts, backoff_base=backoff,
                       fetch_options={"retries": fetch_retries, "min_free_bytes": int(min_free_mb * 1e6)},
                       local_images=local_images, store_wait=store_wait,
                       model=model, llm_workers=llm_workers, llm_batch=llm_batch, gpu_layers=gpu_layers)
    try:
        ocr_preprocess(config)   # Preprocess's own checks, before anything starts
    except ValueError as exc:
        raise click.UsageError(f"--ocr-max-side / --ocr-min-side: {exc}") from None
    config = with_ray(config, ray_address, ocr_gpus, llm_gpus)
    try:
        check_runtime(config.ocr_runtime, config.ocr_engine, parse_device(config.ocr_device).cuda)
    except (ValueError, RuntimeError) as exc:  # no such runtime here, or no CUDA for this device
        raise click.UsageError(str(exc)) from None
    if retry_failed:
        count = run_async(lambda: using_store(workdir(ctx).store, retry_failed_jobs, write=True))
        console.print(f"{count} failed item(s) get a fresh retry budget")
    _run(ctx, config)


@click.command("predict")
@click.option("--model", type=existing_gguf, required=True, help="The GGUF model (e.g. a Q8_0 export).")
@click.option("--split", default=None, help="Only this split's samples (default: every OCR'd sample).")
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="Keep the rules' answer where the model abstains.")
@click.option("--ocr-engine", type=click.Choice(["rapidocr", "paddleocr"]), default="rapidocr", show_default=True,
              help="Whose OCR text the prompts use.")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
@llm_options
@ray_options("llm")
@click.pass_context
def predict_command(ctx: click.Context, model: Path, split: str | None, fallback: bool, ocr_engine: str,
                    no_dashboard: bool, llm_workers: int | None, llm_batch: int | None,
                    gpu_layers: int | None, ray_address: str | None, llm_gpus: float) -> None:
    """Answer every extracted sample with a GGUF model through llama.cpp. The model chooses
    among the rules' candidate answers (llama.cpp scores each); a row without candidates is
    written under a grammar that admits only '<number> <allowed unit>' or a blank. Each sample
    gets the model's answer (source = the file's stem) and the rules and model combined
    (source rules+<stem>). Resumable like every stage. `amlc eval` on a labelled split scores
    every source, and `amlc export` uses the one that scored best (the rules unless a model
    beat them).

    \b
    Example:
      amlc predict --model amlc-work/models/smollm2/model-q8_0.gguf --split test
      amlc predict --model M.gguf --llm-workers 8 --gpu-layers 0   # 8 CPU processes
      amlc predict --model M.gguf --ray auto --llm-gpus 1          # one actor per GPU
    """
    _run(ctx, with_ray(RunConfig(stages=("predict",), exit_when_done=True, dashboard=not no_dashboard,
                                 ocr_engine=ocr_engine, model=model, predict_split=split, fallback=fallback,
                                 llm_workers=llm_workers, llm_batch=llm_batch, gpu_layers=gpu_layers),
                             ray_address, llm_gpus=llm_gpus))


def _run(ctx: click.Context, config: RunConfig) -> None:
    where = workdir(ctx)
    try:
        result = run_async(lambda: run_pipeline(where, config))
    except (AlreadyRunning, WorkerStartError) as exc:
        raise click.ClickException(str(exc)) from None
    except asyncio.CancelledError:
        console.print("stopped at once; finished work is in the store")
        raise SystemExit(130) from None
    console.print(f"the store now holds: {_held(result)}", markup=False, highlight=False, soft_wrap=True)
    slowest = result.engine.writer.longest_write
    if slowest >= SAY_WAIT:
        console.print(f"the longest write to the store took {slowest:.1f} s (another program was writing "
                      "it, or the disk was slow)", markup=False, highlight=False)
    if result.fatal is not None:
        error = result.engine.fatal_error
        if error is not None and not is_fatal(error):  # a bug: the traceback helps fix it
            traceback.print_exception(error)
        console.print(f"[bold red]amlc run stopped:[/] {result.fatal}", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    console.print("run finished")


SAY_WAIT = 1.0   # a write to the store that took this many seconds is worth a line


def _held(result: RunResult) -> str:
    parts = []
    for stage in result.engine.stats:
        c = result.counts.get(stage, StageCounts())
        left = f", {c.pending + c.leased} to do" if c.pending + c.leased else ""
        parts.append(f"{stage} {c.done} done / {c.failed} failed{left}")
    return "; ".join(parts) or "nothing for these stages"


COMMANDS = [run_command, predict_command]
