"""`amlc run` end to end, as a user runs it: download -> OCR -> rules (-> LLM with --model).

    python bench/run.py [--urls 1000,5000] [--images test|photos] [--ocr-workers N] [--device cpu|cuda]
                        [--model M.gguf] [--baseline-flags FLAGS]

A local aiohttp server (tests/http_server.py, a subprocess) serves the 290 real test images
(or, with --images photos, the 660 labelled photos at full size); N URLs alias them with a distinct query string each, so every URL is its own download and its
own OCR, and each carries the test.csv rows of its image (1.5 rows per image, as in the official
file). For each N, `amlc run --exit-when-done` is timed as a subprocess on a fresh work folder and
the table shows, per stage, the items done and their rate (from the store's job timestamps),
then the CPU utilisation of amlc and its workers, their peak summed RSS (flat in N when the
queues are bounded), and the projected wall time for the official test set on this machine.
The baseline, run on the smallest N: the same command with one OCR worker, or with --baseline-flags
instead of --amlc-flags (e.g. "--ocr-reread-below 0": what the second OCR pass costs).

The helpers here (timing an amlc command with its workers' CPU and memory, copying a store) are
shared by bench/ocr.py and bench/infer.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from amlc.store import read_only_uri

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TEST_IMAGES = DATA / "test_images"
OFFICIAL_IMAGES, OFFICIAL_ROWS = 90_666, 131_187
HEADER = ["index", "image_link", "group_id", "entity_name"]


# ---------------------------------------------------------------- shared helpers

@dataclass
class Timed:
    seconds: float
    cpu: float        # user + system seconds of amlc and every worker process it started
    peak_rss_mb: float  # peak of their summed resident memory, sampled 4 times a second
    output: str
    peak_daemon_mb: float = 0.0  # the amlc process's own peak
    peak_worker_mb: float = 0.0  # the largest peak of any one worker process

    @property
    def utilisation(self) -> float:
        """Share of all the machine's cores kept busy."""
        return self.cpu / self.seconds / (os.cpu_count() or 1)


def amlc(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Timed:
    """Run `amlc --workdir W ARGS` as a subprocess; fail loudly if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "amlc", "--workdir", str(workdir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    peak, each = [0], {}
    sampler = threading.Thread(target=_sample_rss, args=(proc, peak, each), daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers are reaped by amlc, so counted
    if proc.returncode != 0:
        raise RuntimeError(f"amlc {' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    workers = [kb for pid, kb in each.items() if pid != proc.pid]
    return Timed(seconds, cpu, peak[0] / 1024, output, each.get(proc.pid, 0) / 1024, max(workers, default=0) / 1024)


def _sample_rss(proc: subprocess.Popen, peak: list[int], each: dict[int, int]) -> None:
    """Peak summed RSS of the process tree in peak[0]; each process's own peak in each."""
    while proc.poll() is None:
        sizes = {pid: _rss_kb(pid) for pid in _tree(proc.pid)}
        peak[0] = max(peak[0], sum(sizes.values()))
        for pid, kb in sizes.items():
            each[pid] = max(each.get(pid, 0), kb)
        time.sleep(0.25)


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [p for child in (task / "children").read_text().split() for p in _tree(int(child))]
        except OSError:
            pass
    return pids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def copy_store(template: Path, into: Path) -> Path:
    """A fresh copy of a prepared work folder (store and images), so each contender starts equal."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(template, into, ignore=shutil.ignore_patterns("run.lock"))
    return into


def store_rows(workdir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(read_only_uri(workdir / 'amlc.db'), uri=True) as con:
        return con.execute(sql, params).fetchall()


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def timed_loop(items: list, call: Callable[[Any], Any]) -> tuple[float, float]:
    """A bare loop in this process: (items per second, CPU seconds per item)."""
    start, cpu = time.perf_counter(), time.process_time()
    for item in items:
        call(item)
    return len(items) / (time.perf_counter() - start), (time.process_time() - cpu) / len(items)


def print_scaling(items: int, unit: str, rows: list[tuple[str, int, Timed, Timed]],
                  bare: tuple[float, float], bare_name: str) -> None:
    """The scaling table of bench/ocr.py and bench/infer.py. rows: (name, workers, the run, the
    same command on the finished store: start-up only); bare: the bare loop's (items/s, CPU
    seconds per item). "net" leaves start-up out; CPU s/item (start-up's CPU left out too) does
    not depend on what else the machine runs, wall time does. Rates are compared with the first
    row's (the benches put one worker first)."""
    bare_rate, bare_cpu = bare
    one = items / (rows[0][2].seconds - rows[0][3].seconds) if rows else None
    print(f"{'contender':<30} {'wall s':>7} {'start s':>7} {unit + '/s':>9} {'net /s':>7} {'CPU':>5} "
          f"{'CPU s/' + unit:>11} {'vs first':>11} {'per core vs bare':>16}")
    for name, workers, run, idle in rows:
        net = items / (run.seconds - idle.seconds)
        versus = f"{net / one:.2f}x" if one else "-"
        print(f"{name:<30} {run.seconds:>7.1f} {idle.seconds:>7.1f} {items / run.seconds:>9.2f} {net:>7.2f} "
              f"{100 * run.utilisation:>4.0f}% {(run.cpu - idle.cpu) / items:>11.3f} {versus:>11} "
              f"{net / max(workers, 1) / bare_rate:>15.2f}x")
    versus = f"{bare_rate / one:.2f}x" if one else "-"
    print(f"{bare_name:<30} {items / bare_rate:>7.1f} {'':>7} {bare_rate:>9.2f} {bare_rate:>7.2f} {'':>5} "
          f"{bare_cpu:>11.3f} {versus:>11} {1:>15.2f}x")


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------- this benchmark

IMAGE_SETS = {  # --images: a folder of real images and the rows that name them
    "test": (TEST_IMAGES, DATA / "test.csv"),   # the official test images, shrunk to 500 px
    "photos": (DATA / "photos", DATA / "photos.csv"),   # labelled train photos at full size
}


def aliased_rows(base: str, urls: int, images: str = "test") -> list[list]:
    """`urls` distinct links cycling over an image set, each with its image's rows."""
    folder, rows_csv = IMAGE_SETS[images]
    by_image: dict[str, list[tuple[str, str]]] = {}
    with rows_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = row["image_link"].rsplit("/", 1)[-1]
            if (folder / name).is_file():
                by_image.setdefault(name, []).append((row["group_id"], row["entity_name"]))
    names = sorted(by_image)
    rows: list[tuple[str, str, str]] = []
    for k in range(urls):
        name = names[k % len(names)]
        rows += [(f"{base}/images/I/{name}?copy={k}", group, entity) for group, entity in by_image[name]]
    return [[i, *row] for i, row in enumerate(rows)]


def stage_rates(workdir: Path) -> dict[str, tuple[int, float]]:
    """stage -> (items done, items per second from the first batch's start to the last's end:
    engines loading before it are left out). Stages that do not record starts (fetch) count
    from their first item done."""
    rows = store_rows(workdir, "SELECT stage, count(*), min(coalesce(started_at, updated_at)), "
                               "max(updated_at), count(started_at) FROM jobs WHERE state = 'done' GROUP BY stage")
    return {stage: (n, (n if started else n - 1) / (last - first) if last > first else float("nan"))
            for stage, n, first, last, started in rows}


def run_once(base: str, urls: int, args: argparse.Namespace, ocr_workers: int | None, flags: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"amlc-run-{urls}-", dir=args.tmp))
    try:
        rows = aliased_rows(base, urls, args.images)
        amlc(workdir, "ingest", str(write_rows(workdir / "in.csv", HEADER, rows)), "--split", "test")
        extra = ["--ocr-device", args.device, "--ocr-engine", args.ocr_engine]
        if ocr_workers is not None:
            extra += ["--ocr-workers", str(ocr_workers)]
        if args.model:
            extra += ["--model", str(args.model)]
            extra += ["--llm-workers", str(args.llm_workers)] if args.llm_workers is not None else []
        timed = amlc(workdir, "run", "--exit-when-done", "--no-dashboard", *extra, *shlex.split(flags))
        failed = store_rows(workdir, "SELECT stage, count(*) FROM jobs WHERE state != 'done' GROUP BY 1")
        return {"urls": urls, "rows": len(rows), "workers": ocr_workers, "timed": timed,
                "stages": stage_rates(workdir), "not_done": dict(failed)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(result: dict, baseline: dict | None, baseline_name: str = "") -> None:
    timed: Timed = result["timed"]
    workers = "default" if result["workers"] is None else result["workers"]
    print(f"\n{result['urls']} URLs, {result['rows']} rows, OCR workers {workers}: "
          f"{timed.seconds:.0f} s wall, CPU {100 * timed.utilisation:.0f}% of the machine, "
          f"peak RSS {timed.peak_rss_mb:.0f} MB (amlc and its workers, summed; amlc itself "
          f"{timed.peak_daemon_mb:.0f} MB, the largest worker {timed.peak_worker_mb:.0f} MB)")
    if result["not_done"]:
        print(f"  not done: {result['not_done']}")
    print(f"  {'stage':<22} {'done':>7} {'per s':>8} {'official set at this rate':>26}")
    for stage, (done, rate) in sorted(result["stages"].items(), key=lambda s: s[1][1]):
        official = OFFICIAL_IMAGES if stage in ("fetch", "ocr") else OFFICIAL_ROWS
        print(f"  {stage:<22} {done:>7} {rate:>8.2f} {hours(official / rate):>26}")
    per_image, cpu_per_image = timed.seconds / result["urls"], timed.cpu / result["urls"]
    print(f"  end to end: {result['urls'] / timed.seconds:.2f} images/s, {cpu_per_image:.2f} CPU s per image "
          f"(all processes) -> official test set ({OFFICIAL_IMAGES:,} images, {OFFICIAL_ROWS:,} rows) in "
          f"{hours(OFFICIAL_IMAGES * per_image)} wall; its CPU alone on {os.cpu_count()} cores: "
          f"{hours(OFFICIAL_IMAGES * cpu_per_image / (os.cpu_count() or 1))}")
    if baseline is not None:
        before = baseline["timed"]
        print(f"  vs {baseline_name} on the same URLs: {before.seconds / timed.seconds:.2f}x the speed, "
              f"{timed.cpu / before.cpu:.2f}x the CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", default="1000,5000", help="comma-separated URL counts (default 1000,5000)")
    parser.add_argument("--ocr-workers", type=int, default=None, help="default: amlc's (one per core)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (OCR on the GPU)")
    parser.add_argument("--ocr-engine", default=None, help="default: rapidocr on cpu, paddleocr on cuda")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF model: adds the predict stage")
    parser.add_argument("--llm-workers", type=int, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    parser.add_argument("--baseline-flags", default=None, metavar="FLAGS",
                        help='the baseline is the same run with these `amlc run` flags instead of one OCR '
                             'worker, e.g. "--ocr-reread-below 0"')
    parser.add_argument("--amlc-flags", default="", metavar="FLAGS",
                        help='more `amlc run` flags for every run, e.g. "--ocr-reread-below 0"')
    parser.add_argument("--images", choices=sorted(IMAGE_SETS), default="test",
                        help="test: the 290 official test images (500 px); photos: the 660 labelled "
                             "photos at full size (up to 1600 px), what the CDN serves")
    parser.add_argument("--tmp", default=None, help="where the work folders go (default: system temp)")
    args = parser.parse_args()
    args.ocr_engine = args.ocr_engine or ("paddleocr" if args.device.startswith("cuda") else "rapidocr")
    sizes = [int(n) for n in args.urls.split(",")]
    print(f"amlc run {args.amlc_flags}".rstrip() + f", {args.ocr_engine} on {args.device}, "
          f"model {args.model or 'none'}; {machine()}")
    from fetch import Corpus, Server  # bench/fetch.py's: tests/http_server.py as a subprocess

    server = Server(Corpus(IMAGE_SETS[args.images][0], [], []), latency_ms=0.0)
    try:
        if args.baseline_flags is None:  # one OCR worker, else the default run with other flags
            name, workers, flags = "one OCR worker", 1, args.amlc_flags
        else:
            name, workers, flags = f"amlc run {args.baseline_flags}", args.ocr_workers, args.baseline_flags
        baseline = None if args.no_baseline else run_once(server.base, min(sizes), args, workers, flags)
        if baseline is not None:
            print(f"\nbaseline: {name}")
            report(baseline, None)
        for urls in sizes:
            report(run_once(server.base, urls, args, args.ocr_workers, args.amlc_flags),
                   baseline if urls == min(sizes) else None, name)
    finally:
        server.close()


if __name__ == "__main__":
    main()
