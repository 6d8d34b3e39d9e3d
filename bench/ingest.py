"""Ingest throughput: the full official test.csv and a synthetic 1M-row file, in one run.

    python bench/ingest.py [--rows 1000000] [--data ../shared/data]

Prints rows/s for a first ingest and for a re-ingest (which must change nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import tempfile
import time
from pathlib import Path

from amlc.ingest import ingest
from amlc.store import open_writer
from amlc.units import ENTITIES

LINK = "https://m.media-amazon.com/images/I/{:011d}.jpg"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [("official test.csv", args.data / "test.csv"),
                 (f"synthetic {args.rows:,} rows", synthetic_csv(Path(tmp) / "synthetic.csv", args.rows))]
        print(f"{'file':28} {'pass':10} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'inserted':>9}")
        for i, (name, path) in enumerate(files):
            store = Path(tmp) / f"store{i}.db"
            for label in ("first", "re-ingest"):
                rows, seconds, inserted = asyncio.run(timed_ingest(store, path, "bench"))
                print(f"{name:28} {label:10} {rows:>10,} {seconds:>8.2f} {rows / seconds:>10,.0f} {inserted:>9,}")


if __name__ == "__main__":
    main()
