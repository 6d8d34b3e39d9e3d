"""Ingest throughput and the cost of looking at a full store: the official test.csv and a
synthetic 1M-row file, in one run.

    python bench/ingest.py [--rows 1000000] [--data ../shared/data]

Prints rows/s for a first ingest and for a re-ingest (which must change nothing). Then every
stage's jobs are made as a finished run leaves them (fetch, ocr, extract, a model's predict
jobs; test.csv gives 440k jobs) and it times, on that store:
  dashboard     one refresh's store query (`store_counts`), in this process
  status        `status_summary`, all the figures `amlc status` prints, in this process
  counting      the baseline: the same figures counted from the tables (GROUP BY), as amlc
                did before the schema kept counts
  amlc status   `amlc status --json` as a subprocess: interpreter start-up and imports included
  start-up      `amlc --version` as a subprocess, the floor under any command
Each is the median of 5 tries.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from amlc.dashboard import store_counts
from amlc.ingest import ingest
from amlc.report import status_summary
from amlc.store import fetch_all, open_reader, open_writer
from amlc.units import ENTITIES

LINK = "https://m.media-amazon.com/images/I/{:011d}.jpg"
TRIES = 5

# Every stage's work as a finished run leaves it, written through the schema's triggers as the
# daemon's would be: 2% of downloads failed, the rest read and extracted, and a model's jobs.
FINISH = [
    "UPDATE jobs SET state = 'failed', attempts = 4, last_error = 'http 404' "
    "WHERE stage = 'fetch' AND item_id % 50 = 0",
    "UPDATE jobs SET state = 'done', attempts = 1 WHERE stage = 'fetch' AND state = 'pending'",
    "UPDATE jobs SET state = 'done', attempts = 1 WHERE stage = 'ocr'",
    "INSERT INTO predictions(sample_id, source, prediction, created_at) SELECT item_id, 'rules', "
    "CASE WHEN item_id % 4 THEN '10 gram' ELSE '' END, 0 FROM jobs WHERE stage = 'extract'",
    "UPDATE jobs SET state = 'done', attempts = 1 WHERE stage = 'extract'",
    "INSERT INTO jobs(stage, item_id) SELECT 'predict:bench', item_id FROM jobs WHERE stage = 'extract'",
]
COUNTING = [
    "SELECT stage, state, count(*) FROM jobs GROUP BY stage, state",
    "SELECT split, count(*), count(DISTINCT image_id), count(label) FROM samples GROUP BY split",
    "SELECT stage, last_error, count(*) AS n FROM jobs NOT INDEXED WHERE state = 'failed' "
    "GROUP BY stage, last_error ORDER BY n DESC LIMIT 5",
    "SELECT source, count(*), sum(prediction != '') FROM predictions GROUP BY source",
]


def synthetic_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """test.csv-shaped rows where, as in the real file, about 70% of rows share an image."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image_link", "group_id", "entity_name"])
        for index in range(rows):
            image = rng.randrange(int(rows * 0.7))
            writer.writerow([index, LINK.format(image), rng.randrange(100_000, 999_999),
                             rng.choice(ENTITIES)])
    return path


async def timed_ingest(store: Path, csv_path: Path, split: str) -> tuple[int, float, int]:
    conn = await open_writer(store)
    try:
        started = time.perf_counter()
        report = await ingest(conn, csv_path, split)
        return report.rows, time.perf_counter() - started, report.inserted
    finally:
        await conn.close()


async def finish_stages(store: Path) -> tuple[int, float]:
    """Jobs in the store once every stage has run, and the seconds it took to get there."""
    conn = await open_writer(store)
    try:
        started = time.perf_counter()
        for sql in FINISH:
            await conn.execute(sql)
            await conn.commit()
        seconds = time.perf_counter() - started
        async with conn.execute("SELECT count(*) FROM jobs") as cursor:
            return (await cursor.fetchone())[0], seconds
    finally:
        await conn.close()


async def median_ms(work: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(TRIES):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


async def looking_costs(store: Path) -> tuple[float, float, float]:
    """Milliseconds of a dashboard refresh's query, of `amlc status`'s and of counting the
    same from the tables, on a read-only connection like theirs."""
    reader = await open_reader(store)

    async def counting() -> None:
        for sql in COUNTING:
            await fetch_all(reader, sql)
    try:
        return (await median_ms(lambda: store_counts(reader)), await median_ms(lambda: status_summary(reader)),
                await median_ms(counting))
    finally:
        await reader.close()


def command_ms(*args: str) -> float:
    amlc = Path(sys.executable).parent / "amlc"
    times = []
    for _ in range(TRIES):
        started = time.perf_counter()
        subprocess.run([str(amlc), *args], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [("official test.csv", args.data / "test.csv"),
                 (f"synthetic {args.rows:,} rows", synthetic_csv(Path(tmp) / "synthetic.csv", args.rows))]
        print(f"{'file':28} {'pass':10} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'inserted':>9}")
        workdirs = [Path(tmp) / f"work{i}" for i in range(len(files))]
        for (name, path), work in zip(files, workdirs):
            for label in ("first", "re-ingest"):
                rows, seconds, inserted = asyncio.run(timed_ingest(work / "amlc.db", path, "bench"))
                print(f"{name:28} {label:10} {rows:>10,} {seconds:>8.2f} {rows / seconds:>10,.0f} {inserted:>9,}")
        print(f"\nevery stage run (ms, median of {TRIES}; dashboard, status and counting in this process, "
              "the commands as subprocesses)")
        print(f"{'store':28} {'jobs':>10} {'made in s':>10} {'dashboard':>10} {'status':>8} "
              f"{'counting':>9} {'amlc status':>12} {'start-up':>9}")
        for (name, _), work in zip(files, workdirs):
            jobs, seconds = asyncio.run(finish_stages(work / "amlc.db"))
            dashboard, status, counting = asyncio.run(looking_costs(work / "amlc.db"))
            command = command_ms("--workdir", str(work), "status", "--json")
            print(f"{name:28} {jobs:>10,} {seconds:>10.1f} {dashboard:>10.2f} {status:>8.2f} "
                  f"{counting:>9.1f} {command:>12.0f} {command_ms('--version'):>9.0f}")


if __name__ == "__main__":
    main()
