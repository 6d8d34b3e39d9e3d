"""OCR throughput through `amlc run --stages ocr`: 1 worker vs N workers vs a bare engine loop.

    python bench/ocr.py [--n 80] [--workers 1,2] [--engine rapidocr] [--device cpu] [--cache DIR]

The same N real images (half from ../shared/data/test_images, half full-size product photos from
../shared/data/photos) are downloaded once into a template work folder (`amlc run --stages fetch
--local-images`); each contender then OCRs a fresh copy of it:
  amlc, K workers  `amlc run --stages ocr --ocr-workers K` as a subprocess, timed whole; its
                   start-up (the same command on the finished copy: engines load, nothing to do)
                   is printed apart and taken out of the "net" rate;
  bare loop        one engine (same backend, preprocessing and one thread) in this process,
                   engine.read([image]) image after image: no store, queues or processes.
Ratios: each contender against one amlc worker, and per core against the bare loop
(net images/s / K / bare images/s; 1.0 means the pool costs nothing and scales perfectly).

--backend ray adds, for each K, `amlc run ... --ray ADDRESS --ocr-workers K`: K OCR actors on a
Ray cluster this script starts on 127.0.0.1 (every core, no dashboard) and stops at the end, the
images travelling to them as bytes through Ray's object store; its CPU column adds what the
cluster's processes used meanwhile. The last lines give Ray's net rate over the local pool's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import threading
from pathlib import Path

from run import (DATA, HEADER, Timed, _tree, amlc, copy_store, machine, print_scaling, store_rows, timed_loop,
                 write_rows)

DEFAULT_CACHE = Path("amlc-work/bench-ocr")   # the template work folder, beside the others


def pick_images(n: int) -> list[Path]:
    """n real images, spread over both folders: half test images, half full-size photos."""
    tests, photos = sorted((DATA / "test_images").glob("*.jpg")), sorted((DATA / "photos").glob("*.jpg"))
    half = n // 2
    return tests[:: max(1, len(tests) // half)][:half] + photos[:: max(1, len(photos) // (n - half))][: n - half]


def template(images: list[Path], cache: Path) -> Path:
    """A work folder holding the images fetched and their ocr jobs pending (made once, reused)."""
    folder = cache / f"template-{len(images)}"
    if (folder / "ready").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    local = folder / "local"
    local.mkdir(parents=True)
    for image in images:  # one folder of local images, as --local-images wants
        shutil.copyfile(image, local / image.name)
    rows = [[i, f"https://bench.invalid/images/I/{p.name}", "1", "item_weight"] for i, p in enumerate(images)]
    amlc(folder, "ingest", str(write_rows(folder / "in.csv", HEADER, rows)), "--split", "bench")
    amlc(folder, "run", "--stages", "fetch", "--exit-when-done", "--no-dashboard", "--local-images", str(local))
    (folder / "ready").touch()
    return folder


def through_amlc(folder: Path, workers: int, args: argparse.Namespace, ray: str | None = None) -> tuple[Timed, Timed]:
    """(the OCR run, the same command again on the finished store: start-up and shut-down only)."""
    command = ["run", "--stages", "ocr", "--exit-when-done", "--no-dashboard", "--ocr-workers", str(workers),
               "--ocr-engine", args.engine, "--ocr-device", args.device]
    command += ["--ray", ray] if ray else []
    command += ["--ocr-batch", str(args.batch)] if args.batch else []
    with ClusterCpu() if ray else contextlib.nullcontext() as cluster:
        timed = amlc(folder, *command)
    if cluster:  # Ray's actors are the cluster's processes, not amlc's: their CPU is added here
        timed.cpu += cluster.seconds
    left = store_rows(folder, "SELECT count(*) FROM jobs WHERE stage = 'ocr' AND state != 'done'")[0][0]
    if left:
        raise RuntimeError(f"{left} OCR jobs not done:\n{timed.output[-2000:]}")
    return timed, amlc(folder, *command)


class ClusterCpu(threading.Thread):
    """CPU seconds of the Ray processes this script started, read 4 times a second while they
    live: Ray reaps a killed actor without its CPU time reaching any parent's account."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.ticks: dict[int, int] = {}
        self.start_ticks = self._read()
        self.stop = threading.Event()

    def __enter__(self) -> "ClusterCpu":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.ticks.update(self._read())

    @property
    def seconds(self) -> float:
        used = sum(t - self.start_ticks.get(pid, 0) for pid, t in self.ticks.items())
        return used / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _read() -> dict[int, int]:
        ticks = {}
        for pid in _tree(os.getpid())[1:]:
            try:
                if b"\0-m\0amlc\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue  # the driver: counted as amlc's own
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks


def bare_loop(paths: list[Path], args: argparse.Namespace) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of one engine reading image after image in this
    process, after a warm-up, with amlc run's default preprocessing (enlarged thumbnails, the
    second pass)."""
    from amlc.ocr import load_engine
    from amlc.pipeline import RunConfig, ocr_preprocess

    engine = load_engine(args.engine, device=args.device, preprocess=ocr_preprocess(RunConfig()))
    engine.read(paths[:1])
    return timed_loop(paths, lambda path: engine.read([path]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=80, help="images (default 80)")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="worker counts to time (default 1,cores)")
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="--ocr-batch (default: amlc's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the template work folder is kept")
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help="ray: also each worker count as actors on a local Ray cluster (the ray extra)")
    args = parser.parse_args()
    images = pick_images(args.n)
    folder = template(images, args.cache)
    stored = [folder / p for (p,) in store_rows(folder, "SELECT path FROM images ORDER BY id")]
    print(f"{len(images)} images ({args.n // 2} test images, {len(images) - args.n // 2} photos), "
          f"{args.engine} on {args.device}, --ocr-batch {args.batch or 'default'}; {machine()}")

    rows = []
    leave, address = start_ray() if args.backend == "ray" else (None, None)
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            run, idle = through_amlc(copy_store(folder, args.cache / "work"), workers, args)
            rows.append((f"amlc run, {workers} worker(s)", workers, run, idle))
            if address:
                run, idle = through_amlc(copy_store(folder, args.cache / "work"), workers, args, address)
                rows.append((f"amlc run --ray, {workers} actor(s)", workers, run, idle))
    finally:
        if leave:
            leave()
    bare = bare_loop(stored, args)
    shutil.rmtree(args.cache / "work", ignore_errors=True)
    print_scaling(len(images), "img", rows, bare, "bare loop, 1 engine")
    for (_, workers, run, idle), (_, _, ray_run, ray_idle) in zip(rows[::2], rows[1::2] if address else []):
        print(f"Ray vs the local pool at {workers} worker(s): net "
              f"{(run.seconds - idle.seconds) / (ray_run.seconds - ray_idle.seconds):.2f}x")


def start_ray() -> tuple[object, str]:
    """A Ray cluster on 127.0.0.1 for the whole benchmark: (what stops it, its address)."""
    from amlc.workers.ray import connect

    leave = connect("local")
    import ray

    return leave, ray.get_runtime_context().gcs_address

if __name__ == "__main__":
    main()
