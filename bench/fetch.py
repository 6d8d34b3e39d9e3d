"""Downloads as users run them: `amlc run --stages fetch` beside a bare aiohttp loop and the
challenge starter kit's strategy, side by side in one run, against one local image server.

    python bench/fetch.py [--n 3000] [--latency 100] [--fail-rate 0.05] [--repeat 1]
                          [--amlc-flags "--concurrency 128 --per-host 128"]

The server (tests/http_server.py, in its own process) serves ../shared/data/test_images under n
distinct URLs /images/I/<id>-<k>.jpg aliasing the real images, answers every request after
--latency ms, and answers --fail-rate of the URLs 503 + `Retry-After: 1` on their first request.
Each contender runs in its own process against a fresh server and an empty folder, is timed
wall clock from its start (interpreter start-up included) and must end with all n images:
  bare         one aiohttp session, 128 concurrent GETs, each body written to a file, no checks
  starter kit  multiprocessing.Pool(64) of urllib downloads (the challenge's utils.py): 3 tries,
               a fixed 3 s pause after a failure (--starter-delay; 0 waits what Retry-After says)
  amlc         `amlc ingest` (not timed), then `amlc run --stages fetch --exit-when-done
               --no-dashboard` at its defaults (and once more per --amlc-flags)
CPU per image is the contender's process and its children's (rusage), the server's excluded.
amlc stores identical bytes once, so it writes one file per distinct image where the others write n.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import multiprocessing
import os
import random
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from amlc.store import read_only_uri

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "test_images"
BARE_CONCURRENCY = 128
STARTER_POOL = 64
RETRIES = 5  # the bare loop's tries per URL; a 503 needs only the second
STARTER_TRIES, STARTER_DELAY = 3, 3.0  # the kit's download_image(retries=3, delay=3)


# ---------------------------------------------------------------- the server and its URLs

@dataclass(frozen=True)
class Corpus:
    """n aliases of the real images (symlinks in `root`) and the URL paths that answer 503 once."""
    root: Path
    names: list[str]
    failing: list[str]

    @classmethod
    def make(cls, folder: Path, n: int, fail_rate: float, seed: int = 0) -> Corpus:
        real = sorted(IMAGES.glob("*.jpg"))
        folder.mkdir()
        names = []
        for k in range(n):
            source = real[k % len(real)]
            name = f"{source.stem}-{k}.jpg"
            (folder / name).symlink_to(source)
            names.append(name)
        failing = random.Random(seed).sample(names, round(n * fail_rate))
        return cls(folder, names, failing)

    def sizes(self) -> dict[str, int]:
        return {name: (self.root / name).stat().st_size for name in self.names}


class Server:
    """tests/http_server.py as a subprocess, so it shares no GIL with a contender."""

    def __init__(self, corpus: Corpus, latency_ms: float) -> None:
        faults = [arg for name in corpus.failing for arg in ("--fault", f"/images/I/{name}=503x1")]
        cmd = [sys.executable, str(ROOT / "tests" / "http_server.py"), "--root", str(corpus.root),
               "--port", "0", "--latency-ms", str(latency_ms), *faults]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"image server did not start: {line!r}")
        self.base = line.split()[1]

    def links(self, corpus: Corpus) -> list[str]:
        return [f"{self.base}/images/I/{name}" for name in corpus.names]

    def close(self) -> float:
        """Stop it; returns the CPU seconds it used, to tell whether it was the bottleneck."""
        self.proc.terminate()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- contenders (child processes)

def bare_loop(links: list[str], out: Path) -> list[str]:
    """The ceiling: GET, retry a 503 after its Retry-After, write the body. Returns failures."""
    import aiohttp

    async def one(session: aiohttp.ClientSession, link: str) -> str | None:
        for _ in range(RETRIES):
            async with session.get(link) as resp:
                body = await resp.read()
                if resp.status == 200:
                    (out / link.rsplit("/", 1)[1]).write_bytes(body)
                    return None
                wait = float(resp.headers.get("Retry-After", 1))
            await asyncio.sleep(wait)
        return f"{link}: http {resp.status}"

    async def go() -> list[str]:
        connector = aiohttp.TCPConnector(limit=BARE_CONCURRENCY, limit_per_host=BARE_CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            return [f for f in await asyncio.gather(*(one(session, link) for link in links)) if f]
    return asyncio.run(go())


def starter_download(job: tuple[str, str, float]) -> str | None:
    """One URL the starter kit's way: urlretrieve, and a pause before trying again."""
    link, target, delay = job
    for _ in range(STARTER_TRIES):
        try:
            urllib.request.urlretrieve(link, target)
            return None
        except urllib.error.HTTPError as exc:
            error, wait = f"http {exc.code}", delay or float(exc.headers.get("Retry-After", 3))
        except OSError as exc:
            error, wait = str(exc), delay or 3.0
        time.sleep(wait)
    return f"{link}: {error}"


def starter_kit(links: list[str], out: Path) -> list[str]:
    delay = float(os.environ.get("STARTER_DELAY", STARTER_DELAY))
    jobs = [(link, str(out / link.rsplit("/", 1)[1]), delay) for link in links]
    with multiprocessing.Pool(STARTER_POOL) as pool:  # the kit's fixed pool, imap one URL at a time
        return [f for f in pool.imap(starter_download, jobs) if f]


CONTENDERS = {"bare": bare_loop, "starter": starter_kit}


def child_main(kind: str, links_file: Path, out: Path) -> None:
    failures = CONTENDERS[kind](links_file.read_text().split(), out)
    for failure in failures:
        print(failure)


# ---------------------------------------------------------------- timing and checking

@dataclass
class Result:
    name: str
    ok: int
    seconds: float
    cpu: float
    failures: list[str]
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one child process (its reaped children included) and its stdout.
    The server is a live child while this runs, so its CPU is not counted."""
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:4])}... exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, cpu, done.stdout


def count_files(out: Path, sizes: dict[str, int]) -> list[str]:
    """Names missing from `out` or with other bytes than their source."""
    return [name for name, size in sizes.items()
            if not (out / name).is_file() or (out / name).stat().st_size != size]


def run_plain(kind: str, label: str, links: list[str], work: Path, sizes: dict[str, int]) -> Result:
    links_file, out = work / "links.txt", work / "out"
    links_file.write_text("\n".join(links))
    out.mkdir()
    seconds, cpu, stdout = timed([sys.executable, __file__, "--child", kind, str(links_file), str(out)])
    missing = count_files(out, sizes)
    failures = stdout.splitlines() + [f"{name}: missing or wrong size" for name in missing[:5]]
    return Result(label, len(sizes) - len(missing), seconds, cpu, failures)


def amlc_command() -> list[str]:
    script = Path(sys.executable).parent / "amlc"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "amlc"]


def write_csv(path: Path, links: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image_link", "group_id", "entity_name"])
        writer.writerows([k, link, 100000 + k % 97, "item_weight"] for k, link in enumerate(links))
    return path


def run_amlc(label: str, flags: list[str], links: list[str], work: Path) -> Result:
    amlc = [*amlc_command(), "--workdir", str(work / "amlc-work")]
    subprocess.run([*amlc, "ingest", str(write_csv(work / "bench.csv", links)), "--split", "bench"],
                   check=True, capture_output=True)
    seconds, cpu, _ = timed([*amlc, "run", "--stages", "fetch", "--exit-when-done", "--no-dashboard", *flags])
    ok, failures = stored_images(work / "amlc-work")
    return Result(label, ok, seconds, cpu, failures)


def stored_images(workdir: Path) -> tuple[int, list[str]]:
    """Fetched images whose file exists, and the fetch jobs that did not end done."""
    with sqlite3.connect(read_only_uri(workdir / 'amlc.db'), uri=True) as conn:
        paths = [r[0] for r in conn.execute(
            "SELECT i.path FROM images i JOIN jobs j ON j.stage = 'fetch' AND j.item_id = i.id "
            "WHERE j.state = 'done' AND i.path IS NOT NULL")]
        failed = [f"{link}: {state} {error}" for link, state, error in conn.execute(
            "SELECT i.link, j.state, j.last_error FROM images i JOIN jobs j "
            "ON j.stage = 'fetch' AND j.item_id = i.id WHERE j.state != 'done'")]
    ok = sum((workdir / p).is_file() for p in paths)  # relative to the work folder, or absolute
    return ok, failed


# ---------------------------------------------------------------- driver

def one_round(args: argparse.Namespace, corpus: Corpus, tmp: Path, round_no: int) -> list[Result]:
    sizes = corpus.sizes()
    plans = [("bare aiohttp loop", lambda links, w: run_plain("bare", "bare aiohttp loop", links, w, sizes)),
             ("starter kit", lambda links, w: run_plain("starter", "starter kit", links, w, sizes)),
             ("amlc run (defaults)", lambda links, w: run_amlc("amlc run (defaults)", [], links, w))]
    for flags in args.amlc_flags:
        label = f"amlc run {flags}"
        plans.append((label, lambda links, w, label=label, flags=flags:
                      run_amlc(label, shlex.split(flags), links, w)))
    results = []
    for i, (label, plan) in enumerate(plans):
        server = Server(corpus, args.latency)
        try:
            work = tmp / f"r{round_no}-{i}"
            work.mkdir()
            result = plan(server.links(corpus), work)
        except BaseException:
            server.close()
            raise
        result.server_cpu = server.close()
        print(f"  round {round_no + 1}: {label:<44} {result.ok:>6}/{args.n} in {result.seconds:6.2f} s, "
              f"{result.rate:7.1f} images/s, CPU {1000 * result.cpu / max(result.ok, 1):5.2f} ms/image "
              f"(server {1000 * result.server_cpu / args.n:4.2f})", flush=True)
        for failure in result.failures[:10]:
            print(f"    FAILED {failure}")
        results.append(result)
    return results


def summary(rounds: list[list[Result]], n: int) -> None:
    by_name: dict[str, list[Result]] = {}
    for result in (r for round_ in rounds for r in round_):
        by_name.setdefault(result.name, []).append(result)
    rate = {name: statistics.median(r.rate for r in rs) for name, rs in by_name.items()}
    bare, starter = rate["bare aiohttp loop"], rate["starter kit"]
    print(f"\nmedian of {len(rounds)} round(s):")
    print(f"| downloader | images/s | x bare | x starter kit | CPU ms/image | server CPU ms/image "
          f"| all {n} images |")
    print("|---|---|---|---|---|---|---|")
    for name, results in by_name.items():
        cpu = statistics.median(r.cpu / max(r.ok, 1) for r in results)
        server = statistics.median(r.server_cpu / n for r in results)
        complete = "yes" if all(r.ok == n and not r.failures for r in results) else "NO"
        print(f"| {name} | {rate[name]:.0f} | {rate[name] / bare:.2f} | {rate[name] / starter:.2f} "
              f"| {1000 * cpu:.2f} | {1000 * server:.2f} | {complete} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="distinct URLs")
    parser.add_argument("--latency", type=float, default=100.0, help="ms the server waits before each answer")
    parser.add_argument("--fail-rate", type=float, default=0.05,
                        help="share of URLs answering 503 + Retry-After: 1 on their first request")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument("--amlc-flags", action="append", default=[], metavar="FLAGS",
                        help='also time `amlc run` with these flags, e.g. "--concurrency 128 --per-host 128"')
    parser.add_argument("--starter-delay", type=float, default=STARTER_DELAY,
                        help="the starter kit's pause after a failed try (its utils.py: 3 s); "
                             "0 waits what Retry-After says")
    args = parser.parse_args()
    os.environ["STARTER_DELAY"] = str(args.starter_delay)  # read by the starter kit's child process
    with tempfile.TemporaryDirectory(prefix="amlc-bench-fetch-") as tmp:
        corpus = Corpus.make(Path(tmp) / "served", args.n, args.fail_rate)
        print(f"{args.n} URLs over {len(list(IMAGES.glob('*.jpg')))} real images, {args.latency:g} ms latency, "
              f"{len(corpus.failing)} URLs answer 503 + Retry-After: 1 once; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        rounds = [one_round(args, corpus, Path(tmp), k) for k in range(args.repeat)]
    summary(rounds, args.n)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (others' work on the machine slows every "
          "contender; compare within one run)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child_main(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
