"""`amlc ingest` of the full train file beside a working `amlc run`: the run's slowest write to the store.

    python bench/beside.py [--work amlc-work/bench-beside] [--train ../shared/data/train.csv]

A work folder gets the test.csv rows whose images are in ../shared/data/test_images, fetched
from that folder once (`amlc run --stages fetch --local-images`). Then, twice on a fresh copy
of it, `amlc run --stages ocr,extract --exit-when-done` reads them: alone (the baseline), and
with `amlc ingest train.csv --split train` started beside it two seconds in. Printed per
contender: the run's wall time, whether it finished, its slowest write to the store (its own closing
line) and the ingest's time. The train rows are only ingested, never fetched: the run has no
fetch stage, so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AMLC = [sys.executable, "-m", "amlc"]
WAITED = re.compile(r"the longest write to the store took ([\d.]+) s")


def amlc(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AMLC, "--workdir", str(workdir), *args], capture_output=True, text=True)


def prepare(template: Path) -> None:
    """The test rows with images on disk, fetched once from the local folder."""
    if (template / "amlc.db").exists():
        return
    template.mkdir(parents=True)
    on_disk = {p.name for p in (DATA / "test_images").glob("*.jpg")}
    with open(DATA / "test.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if r["image_link"].rsplit("/", 1)[-1] in on_disk]
        fields = reader.fieldnames or []
    with open(template / "test-rows.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    amlc(template, "ingest", str(template / "test-rows.csv"), "--split", "test").check_returncode()
    amlc(template, "run", "--stages", "fetch", "--exit-when-done", "--no-dashboard",
         "--local-images", str(DATA / "test_images")).check_returncode()


def contender(template: Path, into: Path, train: Path | None) -> dict:
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(template, into)
    started = time.perf_counter()
    run = subprocess.Popen([*AMLC, "--workdir", str(into), "run", "--stages", "ocr,extract", "--exit-when-done",
                            "--no-dashboard"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ingest_s = None
    if train is not None:
        time.sleep(2)
        begun = time.perf_counter()
        amlc(into, "ingest", str(train), "--split", "train").check_returncode()
        ingest_s = time.perf_counter() - begun
    output, _ = run.communicate()
    waited = WAITED.search(output)
    return {"wall_s": time.perf_counter() - started, "finished": run.returncode == 0,
            "longest_write_s": float(waited.group(1)) if waited else None, "ingest_s": ingest_s,
            "tail": output.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("amlc-work/bench-beside"))
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    args = parser.parse_args()
    template = args.work / "template"
    prepare(template)
    alone = contender(template, args.work / "alone", None)
    beside = contender(template, args.work / "beside", args.train)
    print(f"{'contender':36} {'run wall s':>10} {'finished':>8} {'longest write s':>16} {'ingest s':>8}")
    for name, r in (("amlc run alone (baseline)", alone), ("amlc run + amlc ingest train.csv", beside)):
        wait = f"{r['longest_write_s']:.1f}" if r["longest_write_s"] is not None else "< 1"
        ingest = f"{r['ingest_s']:.1f}" if r["ingest_s"] is not None else "-"
        print(f"{name:36} {r['wall_s']:>10.1f} {str(r['finished']):>8} {wait:>16} {ingest:>8}")
    print(f"run wall time beside the ingest / alone: {beside['wall_s'] / alone['wall_s']:.2f}x; "
          f"last line of each run: {alone['tail']!r} / {beside['tail']!r}")


if __name__ == "__main__":
    main()
