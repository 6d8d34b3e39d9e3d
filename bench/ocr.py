"""OCR backends side by side on real product images: latency, pipeline throughput, our overhead.

    python bench/ocr.py [--n 40] [--engines rapidocr,paddleocr] [--batch 4] [--device cpu]

For each backend, on the same N images:
  latency   engine.read([image]) one image at a time: mean, p50, p90 seconds;
  pipeline  images/s through engine.read run in one worker thread, fed by an asyncio producer
            through a bounded queue, as the daemon runs it;
  bare      images/s of a plain loop calling the library itself on the file paths;
  ratio     bare / pipeline: what our decoding, preprocessing and plumbing cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared; onnxruntime uses 1 thread

from amlc.ocr import OcrEngine, Preprocess, load_engine  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test_images"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(engine: OcrEngine, paths: list[Path]) -> dict[str, float]:
    times, lines, nonempty = [], 0, 0
    for path in paths:
        start = time.perf_counter()
        [result] = engine.read([path])
        times.append(time.perf_counter() - start)
        lines += len(result.lines)
        nonempty += bool(result.lines)
    return {
        "mean": statistics.fmean(times), "p50": percentile(times, 0.5),
        "p90": percentile(times, 0.9), "lines": lines / len(paths),
        "nonempty": nonempty / len(paths),
    }


async def pipeline(engine: OcrEngine, paths: list[Path], batch: int, depth: int = 8) -> float:
    """images/s: producer -> bounded queue -> one OCR worker thread calling engine.read."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")
    loop = asyncio.get_running_loop()

    async def produce() -> None:
        for path in paths:
            await queue.put(await asyncio.to_thread(path.read_bytes))
        await queue.put(None)

    async def consume() -> int:
        done, finished = 0, False
        while not finished:
            items = [await queue.get()]
            while len(items) < batch and not queue.empty():
                items.append(queue.get_nowait())
            finished = items[-1] is None
            images = [item for item in items if item is not None]
            if images:
                done += len(await loop.run_in_executor(worker, engine.read, images))
        return done

    start = time.perf_counter()
    _, done = await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - start
    worker.shutdown()
    assert done == len(paths)
    return len(paths) / elapsed


def bare_call(engine: Any) -> Callable[[Path], Any]:
    """The library's own entry point on a file path, with the engine's settings and sessions."""
    if engine.name == "rapidocr":
        return lambda path: engine.ocr(str(path))
    return lambda path: list(engine.ocr.predict(str(path)))


def bare(engine: OcrEngine, paths: list[Path]) -> float:
    call = bare_call(engine)
    start = time.perf_counter()
    for path in paths:
        call(path)
    return len(paths) / (time.perf_counter() - start)


def run(name: str, paths: list[Path], args: argparse.Namespace) -> dict[str, float]:
    start = time.perf_counter()
    engine = load_engine(name, preprocess=Preprocess(max_side=args.max_side), device=args.device)
    loaded = time.perf_counter() - start
    engine.read(paths[:1])  # warm-up: first run allocates onnxruntime buffers
    row = {"load_s": loaded, **latency(engine, paths)}
    row["pipeline"] = asyncio.run(pipeline(engine, paths, args.batch))
    row["bare"] = bare(engine, paths)
    row["ratio"] = row["bare"] / row["pipeline"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="images to use (default 40)")
    parser.add_argument("--engines", default="rapidocr,paddleocr")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--batch", type=int, default=4, help="images per engine.read in the pipeline")
    parser.add_argument("--max-side", type=int, default=Preprocess().max_side)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    paths = sorted(args.images.glob("*.jpg"))[: args.n]
    print(f"{len(paths)} images from {args.images}, device {args.device}, batch {args.batch}, "
          f"max_side {args.max_side}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = {name: run(name, paths, args) for name in args.engines.split(",")}
    head = (f"{'engine':<10} {'load s':>7} {'mean s':>7} {'p50 s':>7} {'p90 s':>7} {'lines':>6} "
            f"{'text%':>6} {'pipe img/s':>10} {'bare img/s':>10} {'bare/pipe':>9}")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(f"{name:<10} {r['load_s']:7.2f} {r['mean']:7.3f} {r['p50']:7.3f} {r['p90']:7.3f} "
              f"{r['lines']:6.1f} {100 * r['nonempty']:6.0f} {r['pipeline']:10.2f} {r['bare']:10.2f} "
              f"{r['ratio']:9.2f}")


if __name__ == "__main__":
    main()
