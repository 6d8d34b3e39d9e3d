"""Download throughput, side by side in one run, against one local server with injected latency.

    python bench/fetch.py [--n 3000] [--latency-ms 30] [--concurrency 64] [--img2dataset PATH]

The server (tests/http_server.py, a subprocess) serves the real test images; the n URLs cycle over
them with a distinct query string each, so every URL is a separate download. Compared:
  amlc        amlc.fetch.Fetcher: retries, size cap, Pillow decode check, content-addressed writes
  baseline    the challenge starter kit's way: multiprocessing.Pool(64) of urllib.request
              downloads, 3 retries with 3 s sleeps, one file written per URL
  img2dataset its CLI on a URL list (files output, no resize, no re-encode); needs the package,
              ideally in its own venv since it pins old pandas/opencv (--img2dataset PATH)
  ceiling     a bare aiohttp loop reading bodies: no disk, no decode
Besides images/s it prints client CPU per image (the server's excluded), steadier than wall
time on a shared machine.
Note that amlc stores identical bytes once, so it writes only one file per distinct image here.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from amlc.fetch import FetchConfig, Fetcher, link_key  # noqa: E402

IMAGES = ROOT.parent / "shared" / "data" / "test_images"
I2D_CANDIDATES = [os.environ.get("AMLC_IMG2DATASET", ""), str(Path(sys.executable).parent / "img2dataset"),
                  "/tmp/i2d-venv/bin/img2dataset", shutil.which("img2dataset") or ""]


class Server:
    """tests/http_server.py as a subprocess, so it does not share our GIL."""

    def __init__(self, latency_ms: float) -> None:
        cmd = [sys.executable, str(ROOT / "tests" / "http_server.py"), "--root", str(IMAGES),
               "--port", "0", "--latency-ms", str(latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.base = line.split()[1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_links(base: str, n: int) -> list[str]:
    names = sorted(p.name for p in IMAGES.glob("*.jpg"))
    return [f"{base}/images/I/{names[i % len(names)]}?n={i}" for i in range(n)]


# ---------------------------------------------------------------- contenders

def run_amlc(links: list[str], concurrency: int, work: Path) -> int:
    async def go() -> int:
        config = FetchConfig(concurrency=concurrency, per_host=concurrency)
        async with Fetcher(work, config) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(link) for link in links))
        return sum(r.error is None for r in results)
    return asyncio.run(go())


def _starter_download(job: tuple[str, str], retries: int = 3, delay: float = 3) -> bool:
    link, folder = job
    target = os.path.join(folder, f"{link_key(link)}-{link.rsplit('=', 1)[-1]}.jpg")
    for _ in range(retries):
        try:
            urllib.request.urlretrieve(link, target)
            return True
        except Exception:
            time.sleep(delay)
    return False


def run_baseline(links: list[str], concurrency: int, work: Path) -> int:
    with multiprocessing.Pool(64) as pool:  # the starter kit's fixed pool; concurrency is not its knob
        return sum(pool.map(_starter_download, [(link, str(work)) for link in links]))


def run_ceiling(links: list[str], concurrency: int, work: Path) -> int:
    async def one(session: aiohttp.ClientSession, link: str) -> bool:
        async with session.get(link) as resp:
            await resp.read()
            return resp.status == 200

    async def go() -> int:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            return sum(await asyncio.gather(*(one(session, link) for link in links)))
    return asyncio.run(go())


def find_img2dataset(explicit: str | None) -> str | None:
    for candidate in [explicit or "", *I2D_CANDIDATES]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_img2dataset(exe: str, links: list[str], concurrency: int, work: Path) -> tuple[int, float | None]:
    """Successes, and the seconds its shards spent downloading (without interpreter start-up)."""
    url_list = work / "urls.txt"
    url_list.write_text("\n".join(links) + "\n")
    out = work / "out"
    cmd = [exe, "--url_list", str(url_list), "--input_format", "txt", "--output_folder", str(out),
           "--output_format", "files", "--resize_mode", "no", "--skip_reencode", "True",
           "--processes_count", "2", "--thread_count", str(concurrency), "--retries", "0",
           "--number_sample_per_shard", "1000", "--timeout", "10", "--extract_exif", "False"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    stats = [json.loads(Path(p).read_text()) for p in glob.glob(str(out / "*_stats.json"))]
    span = None
    if stats and all("start_time" in s and "end_time" in s for s in stats):
        span = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return sum(s.get("successes", 0) for s in stats), span


# ---------------------------------------------------------------- driver

def cpu_seconds() -> float:
    """CPU of this process and its reaped children (Pool workers, img2dataset), not the server's."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[int, float, float]:
    """Result, wall seconds, CPU seconds. On a shared machine wall time is noisy; CPU is steadier."""
    started, cpu = time.perf_counter(), cpu_seconds()
    ok = fn(*args)
    return ok, time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="URLs per contender")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="server delay per response")
    parser.add_argument("--concurrency", type=int, default=64, help="connections for amlc, img2dataset, ceiling")
    parser.add_argument("--img2dataset", help="img2dataset executable (else found on PATH / AMLC_IMG2DATASET)")
    args = parser.parse_args()

    server = Server(args.latency_ms)
    rates: dict[str, float] = {}
    print(f"{args.n} URLs over {len(list(IMAGES.glob('*.jpg')))} real images, {args.latency_ms:g} ms latency, "
          f"concurrency {args.concurrency}\n")
    print(f"{'contender':<24}{'ok':>7}{'seconds':>10}{'images/s':>11}{'cpu ms/img':>12}")
    try:
        links = make_links(server.base, args.n)
        run_ceiling(links[:200], args.concurrency, Path("."))  # warm the server up
        for name, fn in [("ceiling (bare aiohttp)", run_ceiling), ("amlc Fetcher", run_amlc),
                         ("baseline (Pool+urllib)", run_baseline)]:
            with tempfile.TemporaryDirectory() as work:
                ok, secs, cpu = timed(fn, links, args.concurrency, Path(work))
            rates[name] = ok / secs
            print(f"{name:<24}{ok:>7}{secs:>10.2f}{ok / secs:>11.1f}{1000 * cpu / max(ok, 1):>12.2f}")
        bench_img2dataset(args, links, rates)
    finally:
        server.close()
    print_ratios(rates)


def bench_img2dataset(args: argparse.Namespace, links: list[str], rates: dict[str, float]) -> None:
    exe = find_img2dataset(args.img2dataset)
    if exe is None:
        print("img2dataset: not installed (pip install img2dataset, or --img2dataset PATH); skipped")
        return
    with tempfile.TemporaryDirectory() as work:
        try:
            (ok, span), secs, cpu = timed(run_img2dataset, exe, links, args.concurrency, Path(work))
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"img2dataset: could not run ({exc}); skipped")
            return
    rates["img2dataset"] = ok / secs
    print(f"{'img2dataset':<24}{ok:>7}{secs:>10.2f}{ok / secs:>11.1f}{1000 * cpu / max(ok, 1):>12.2f}"
          "   (wall and CPU incl. start-up)")
    if span:
        rates["img2dataset (shards)"] = ok / span
        print(f"{'img2dataset (shards)':<24}{ok:>7}{span:>10.2f}{ok / span:>11.1f}   (download span only)")


def print_ratios(rates: dict[str, float]) -> None:
    amlc = rates.get("amlc Fetcher")
    if not amlc:
        return
    print()
    for other in ("baseline (Pool+urllib)", "img2dataset", "img2dataset (shards)", "ceiling (bare aiohttp)"):
        if rates.get(other):
            print(f"amlc / {other:<24} {amlc / rates[other]:6.2f}x")


if __name__ == "__main__":
    main()
