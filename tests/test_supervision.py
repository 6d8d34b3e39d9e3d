"""`amlc run` never goes silent: a full disk stops it with the cause, budgets survive crashes,
work follows the OCR engine, and the work folder can move."""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable, Iterator

from amlc.jobs import DIED
from http_server import DEFAULT_ROOT
from store_helpers import amlc, query, start_run, wait_for, write_csv

IMAGES = sorted(p.name for p in DEFAULT_ROOT.glob("*.jpg"))
HEADER = ["index", "image_link", "group_id", "entity_name"]
QUICK = ["--no-dashboard", "--exit-when-done", "--timeout", "2", "--backoff", "0.05"]


def ingest(workdir: Path, server, names: list[str]) -> list[str]:
    paths = [f"/images/I/{name}" for name in names]
    rows = [[i, server.url(p), "123", "item_weight"] for i, p in enumerate(paths)]
    amlc(workdir, "ingest", str(write_csv(workdir.parent / f"{workdir.name}.csv", HEADER, rows)),
         "--split", "t")
    return paths


def job_counts(store: Path, stage: str) -> dict[str, int]:
    return dict(query(store, "SELECT state, count(*) FROM jobs WHERE stage = ? GROUP BY 1", (stage,)))


@contextlib.contextmanager
def small_disk(where: Path, size: str = "3m") -> Iterator[dict]:
    """A tiny tmpfs at `where` when we may mount one (as root); else the same effect through a
    file size limit in the run's child process. Yields start_run's extra arguments."""
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    mounted = bool(shutil.which("mount")) and subprocess.run(mount, capture_output=True).returncode == 0
    try:
        yield {} if mounted else {"preexec_fn": _limit_file_size(where)}
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=True)


def _limit_file_size(where: Path) -> Callable[[], None]:
    def limit() -> None:  # the store's write-ahead log soon passes its file's size + 300 kB
        size = sum(f.stat().st_size for f in where.rglob("amlc.db*")) + 300_000
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def done_links(store: Path) -> set[str]:
    return {link for (link,) in query(store, "SELECT i.link FROM images i JOIN jobs j ON j.item_id = i.id "
                                             "AND j.stage = 'fetch' AND j.state = 'done'")}


def test_a_full_disk_stops_the_run_with_its_cause_then_the_moved_folder_completes(tmp_path, image_server):
    names = IMAGES  # 5.3 MB of images: more than the small disk holds beside the store
    with small_disk(tmp_path / "small") as limits:
        work = tmp_path / "small" / "work"
        paths = ingest(work, image_server, names)
        # a 1 MB reserve on the 3 MB disk: the store keeps room to record what was fetched
        child = start_run(work, "--stages", "fetch", "--concurrency", "4", "--min-free-mb", "1",
                          *QUICK, **limits)
        output, _ = child.communicate(timeout=30)  # stops within seconds: no stall
        assert child.returncode == 1, output
        assert "amlc run stopped:" in output and "nothing done so far is lost" in output, output
        assert "is full" in output if not limits else "could not be written" in output
        before = done_links(work / "amlc.db")
        assert 0 < len(before) < len(names), output
        # the closing summary is what the store holds, not what the process counted
        assert f"fetch {len(before)} done / 0 failed" in output, output
        hits_before = dict(image_server.hits)
        moved = tmp_path / "bigger"
        shutil.copytree(work, moved)  # the user moves the folder to a bigger disk

    amlc(moved, "run", "--stages", "fetch", *QUICK)
    store = moved / "amlc.db"
    assert job_counts(store, "fetch") == {"done": len(names)}
    for (path,) in query(store, "SELECT path FROM images"):  # relative, and there after the move
        assert not path.startswith("/") and (moved / path).is_file()
    for path in paths:  # what was stored before the fault is not downloaded again
        again = image_server.hits[path] - hits_before.get(path, 0)
        assert again == (0 if image_server.url(path) in before else 1), path


def test_work_that_began_when_the_process_died_spends_its_budget_queued_work_does_not(tmp_path, image_server):
    names = IMAGES[100:112]
    ingest(tmp_path, image_server, names)
    amlc(tmp_path, "run", "--stages", "fetch", *QUICK)
    store = tmp_path / "amlc.db"
    daemon = start_run(tmp_path, "--stages", "ocr", "--ocr-batch", "2", "--max-attempts", "1")
    wait_for(store, "SELECT count(*) FROM jobs WHERE stage = 'ocr' AND started_at IS NOT NULL", 1)
    daemon.send_signal(signal.SIGKILL)  # as if the OCR engine had crashed the process
    daemon.wait(10)
    began = {i for (i,) in query(store, "SELECT item_id FROM jobs WHERE stage = 'ocr' "
                                        "AND state = 'leased' AND started_at IS NOT NULL")}
    queued = {i for (i,) in query(store, "SELECT item_id FROM jobs WHERE stage = 'ocr' "
                                         "AND state = 'leased' AND started_at IS NULL")}
    assert began and queued, "the kill should find work begun and work still queued"

    amlc(tmp_path, "run", "--stages", "ocr", "--max-attempts", "1", *QUICK)
    rows = {i: (state, attempts, error) for i, state, attempts, error in query(
        store, "SELECT item_id, state, attempts, last_error FROM jobs WHERE stage = 'ocr'")}
    for item in began:  # its one try was the crash: failed, with the reason
        assert rows[item] == ("failed", 1, DIED)
    for item in queued:  # never started: a fresh try, done
        assert rows[item][:2] == ("done", 1)


def test_switching_the_ocr_engine_reads_again_and_extracts_from_the_new_text(tmp_path, image_server):
    ingest(tmp_path, image_server, IMAGES[120:122])
    store = tmp_path / "amlc.db"
    amlc(tmp_path, "run", *QUICK)
    assert job_counts(store, "extract") == {"done": 2}
    amlc(tmp_path, "run", "--ocr-engine", "paddleocr", *QUICK)
    engines = query(store, "SELECT engine, count(*) FROM ocr_results GROUP BY 1 ORDER BY 1")
    assert engines == [("paddleocr", 2), ("rapidocr", 2)]
    details = [json.loads(d) for (d,) in query(store, "SELECT detail FROM predictions WHERE source = 'rules'")]
    assert [d["ocr"] for d in details] == ["paddleocr"] * 2
    amlc(tmp_path, "run", "--ocr-engine", "rapidocr", *QUICK)  # back: no new reading, new answers
    assert query(store, "SELECT count(*) FROM ocr_results") == [(4,)]
    details = [json.loads(d) for (d,) in query(store, "SELECT detail FROM predictions WHERE source = 'rules'")]
    assert [d["ocr"] for d in details] == ["rapidocr"] * 2


def test_a_missing_or_damaged_image_file_is_fetched_again(tmp_path, image_server):
    paths = ingest(tmp_path, image_server, IMAGES[130:133])
    amlc(tmp_path, "run", "--stages", "fetch", *QUICK)
    store = tmp_path / "amlc.db"
    files = [tmp_path / p for (p,) in query(store, "SELECT path FROM images ORDER BY id")]
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:100])  # truncated on disk
    amlc(tmp_path, "run", *QUICK)
    assert job_counts(store, "ocr") == {"done": 3} and job_counts(store, "fetch") == {"done": 3}
    assert [image_server.hits[p] for p in paths] == [2, 2, 1]
    assert files[1].stat().st_size > 100


def test_a_store_locked_past_the_busy_timeout_stops_the_run_and_says_so(tmp_path, image_server):
    for name in IMAGES[140:142]:  # slow answers: the lock is taken while the downloads are leased
        image_server.add_fault(f"/images/I/{name}", "slow")
    ingest(tmp_path, image_server, IMAGES[140:142])
    blocker = sqlite3.connect(tmp_path / "amlc.db", timeout=10)
    daemon = start_run(tmp_path, "--stages", "fetch", "--exit-when-done", "--store-wait", "1")
    try:
        wait_for(tmp_path / "amlc.db", "SELECT count(*) FROM jobs WHERE state = 'leased'", 1)
        blocker.execute("BEGIN EXCLUSIVE")  # another program holds the store
        output, _ = daemon.communicate(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert daemon.returncode == 1, output
    assert "stayed locked by another program for" in output and "(--store-wait)" in output, output


def test_a_store_another_program_writes_is_waited_for_not_a_fault(tmp_path, image_server):
    """Another writer holds the store past SQLite's 10 s busy timeout (an ingest of a large
    file, say), then lets go: the run waits, finishes its work and says how long it waited."""
    import time
    for name in IMAGES[143:145]:  # slow answers: the lock is taken while the downloads are leased
        image_server.add_fault(f"/images/I/{name}", "slow")
    ingest(tmp_path, image_server, IMAGES[143:145])
    blocker = sqlite3.connect(tmp_path / "amlc.db", timeout=10)
    daemon = start_run(tmp_path, "--stages", "fetch", "--exit-when-done")
    try:
        wait_for(tmp_path / "amlc.db", "SELECT count(*) FROM jobs WHERE state = 'leased'", 1)
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(12)
        blocker.rollback()
        output, _ = daemon.communicate(timeout=90)
    finally:
        blocker.close()
    assert daemon.returncode == 0, output
    assert "fetch 2 done / 0 failed" in output and "the longest write to the store took" in output, output


def test_the_closing_summary_counts_what_the_store_holds(tmp_path, image_server):
    paths = [f"/fault/404/images/I/{IMAGES[150]}", f"/images/I/{IMAGES[151]}"]
    rows = [[i, image_server.url(p), "1", "width"] for i, p in enumerate(paths)]
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "in.csv", HEADER, rows)), "--split", "t")
    amlc(tmp_path, "run", "--stages", "fetch", *QUICK)
    out = amlc(tmp_path, "run", "--stages", "fetch", *QUICK).output  # this process did nothing
    assert "the store now holds: fetch 1 done / 1 failed" in out, out


def test_a_fault_that_stops_the_run_charges_no_try_to_the_work_in_flight(tmp_path, image_server):
    """One OCR batch of 60 images is under way when a download finds the disk below the
    reserve (--min-free-mb past any disk's size): the run stops with that cause, and the 60
    claims go back to pending with their try returned, so the next run reads them all instead
    of failing them as 'process died'."""
    ingest(tmp_path, image_server, IMAGES[:60])
    amlc(tmp_path, "run", "--stages", "fetch", *QUICK)
    image_server.add_fault(f"/images/I/{IMAGES[60]}", "slow")  # the OCR batch starts first
    late = write_csv(tmp_path / "late.csv", HEADER, [[0, image_server.url(f"/images/I/{IMAGES[60]}"), "1", "width"]])
    amlc(tmp_path, "ingest", str(late), "--split", "late")
    stopped = start_run(tmp_path, "--stages", "fetch,ocr", "--ocr-workers", "1", "--ocr-batch", "60",
                        "--min-free-mb", "1e9", "--max-attempts", "1", "--exit-when-done")
    output, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == 1 and "amlc run stopped:" in output, output
    store = tmp_path / "amlc.db"
    ocr = query(store, "SELECT state, attempts, started_at, last_error, count(*) FROM jobs "
                       "WHERE stage = 'ocr' GROUP BY 1, 2, 3, 4")
    assert ocr == [("pending", 0, None, None, 60)], output

    amlc(tmp_path, "run", "--stages", "ocr", "--max-attempts", "1", *QUICK)
    assert job_counts(store, "ocr") == {"done": 60}
