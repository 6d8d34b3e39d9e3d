"""Worker pools on real OCR engines and real images: processes read what one engine reads, a
killed worker loses nothing, and an image that kills its worker fails alone (through `amlc run`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amlc.ocr import OcrSpec, load_engine
from amlc.workers import DIED, Failed, ProcessPool, WorkerStartError, make_pool
from amlc.workers.process import TEST_EXIT_ENV

from images import DATA, real_images
from store_helpers import amlc, query, write_csv

HEADER = ["index", "image_link", "group_id", "entity_name"]
RUN = ["run", "--no-dashboard", "--exit-when-done", "--timeout", "5", "--backoff", "0.05"]


def ingest_images(workdir: Path, server, paths: list[Path]) -> None:
    rows = [[i, server.url(f"/images/I/{p.name}"), "1", "item_weight"] for i, p in enumerate(paths)]
    amlc(workdir, "ingest", str(write_csv(workdir / "in.csv", HEADER, rows)), "--split", "t")


def ocr_jobs(store: Path) -> dict[str, tuple]:
    """image file name -> (ocr state, attempts, last error)."""
    rows = query(store, """SELECT i.link, j.state, j.attempts, j.last_error FROM images i
                           JOIN jobs j ON j.stage = 'ocr' AND j.item_id = i.id""")
    return {link.rsplit("/", 1)[-1]: tuple(rest) for link, *rest in rows}


def test_two_ocr_processes_read_real_images_like_one_engine(tmp_path: Path) -> None:
    paths = real_images(8, stride=31)
    expected = load_engine("rapidocr").read(paths)
    not_an_image = tmp_path / "page.jpg"
    not_an_image.write_text("<html>404</html>")
    inputs: list = [*paths[:4], not_an_image, *paths[4:6], paths[6].read_bytes(), str(paths[7])]

    async def read_in_two_batches(pool: ProcessPool) -> list:
        first, second = await asyncio.gather(pool.run(inputs[:5]), pool.run(inputs[5:]))
        return first + second

    pool = make_pool(OcrSpec("rapidocr"), workers=2)
    try:
        assert isinstance(pool, ProcessPool) and len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        got = asyncio.run(read_in_two_batches(pool))
    finally:
        pool.close()
    # the bad file fails alone; its batch-mates were re-run one by one and read
    assert isinstance(got[4], Failed) and got[4].error.startswith("OcrError: image 0: not an image")
    read = got[:4] + got[5:]
    assert [r.lines for r in read] == [r.lines for r in expected]
    assert sum(bool(r.text()) for r in read) >= 6


def test_a_worker_that_cannot_build_its_engine_stops_the_pool_with_its_reason() -> None:
    with pytest.raises(WorkerStartError, match="unknown OCR engine 'tesseract'"):
        make_pool(OcrSpec("tesseract"), workers=1)


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def _busy_worker(pid: int, timeout: float = 120) -> int:
    """A spawned worker of process `pid` that is using the CPU (so it holds a batch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [c for c in _children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        before = {c: _cpu_ticks(c) for c in workers}
        time.sleep(0.2)
        busy = [c for c in workers if _cpu_ticks(c) > before[c]]
        if busy:
            return busy[0]
    raise AssertionError("no busy OCR worker found")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_for_ocr_done(store: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as con:
            done = con.execute("SELECT count(*) FROM jobs WHERE stage = 'ocr' AND state = 'done'").fetchone()[0]
        if done >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} OCR jobs done after {timeout} s")


def test_killing_a_worker_mid_batch_loses_nothing_and_retries_its_image(tmp_path, image_server) -> None:
    paths = real_images(10, stride=23)
    ingest_images(tmp_path, image_server, paths)
    env = {**os.environ, "AMLC_WORKDIR": str(tmp_path)}
    run = subprocess.Popen([sys.executable, "-m", "amlc", *RUN, "--ocr-workers", "2", "--ocr-batch", "1"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_ocr_done(tmp_path / "amlc.db", 1)
        os.kill(_busy_worker(run.pid), signal.SIGKILL)
        output, _ = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 0, output
    jobs = ocr_jobs(tmp_path / "amlc.db")
    assert {state for state, _, _ in jobs.values()} == {"done"} and len(jobs) == len(paths)
    assert sorted(attempts for _, attempts, _ in jobs.values()) == [1] * (len(paths) - 1) + [2]
    assert query(tmp_path / "amlc.db", "SELECT count(*) FROM ocr_results") == [(len(paths),)]
    assert query(tmp_path / "amlc.db", "SELECT state, count(*) FROM jobs WHERE stage = 'extract' "
                                       "GROUP BY 1") == [("done", len(paths))]


def test_an_image_that_kills_its_worker_fails_alone_after_its_budget(tmp_path, image_server, monkeypatch) -> None:
    paths = real_images(6, stride=41)
    poison = paths[2]
    # Test-only hook: a worker dies (os._exit) on the file it is given, named by its sha256.
    monkeypatch.setenv(TEST_EXIT_ENV, hashlib.sha256(poison.read_bytes()).hexdigest())
    ingest_images(tmp_path, image_server, paths)
    amlc(tmp_path, *RUN, "--ocr-workers", "2", "--ocr-batch", "3", "--max-attempts", "2")

    jobs = ocr_jobs(tmp_path / "amlc.db")
    state, attempts, error = jobs.pop(poison.name)
    assert (state, attempts) == ("failed", 2)
    assert error.startswith(DIED) and "exit code 70" in error
    # its batch-mates were re-run one by one in fresh workers: done, at their first attempt
    assert set(jobs.values()) == {("done", 1, None)}


def test_a_worker_that_cannot_start_again_stops_the_run_with_its_cause(tmp_path: Path, image_server,
                                                                       monkeypatch) -> None:
    """The only OCR worker dies on one image, and its replacements cannot start (test hooks:
    a worker may start once; it dies on the poison image). After MAX_START_FAILURES failed
    starts in a row the run stops and says why, instead of charging every later image a try."""
    from amlc.workers.process import MAX_START_FAILURES, TEST_START_ONCE_ENV
    paths = real_images(8, stride=37)
    monkeypatch.setenv(TEST_EXIT_ENV, hashlib.sha256(paths[1].read_bytes()).hexdigest())
    monkeypatch.setenv(TEST_START_ONCE_ENV, str(tmp_path / "started-once"))
    ingest_images(tmp_path, image_server, paths)
    result = amlc(tmp_path, *RUN, "--ocr-workers", "1", "--ocr-batch", "1", ok=False)
    assert result.exit_code == 1, result.output
    assert "worker could not start" in result.output and "may start only once" in result.output
    assert f"{MAX_START_FAILURES} starts in a row failed" in result.output
    charged = [job for job in ocr_jobs(tmp_path / "amlc.db").values() if job[2] and "could not start" in job[2]]
    assert len(charged) <= MAX_START_FAILURES - 1   # before: every image left, at every try


def test_closing_the_pool_as_a_busy_worker_dies_reaps_it_once_without_an_error() -> None:
    """close() waits on a worker busy with a batch; the worker is killed meanwhile, so the pool
    thread waiting for its answer and close() both find it dead at once. Exactly one reaps it:
    close() returns cleanly and the waiting call fails with the worker's death, every time."""
    from amlc.workers.base import BatchFailed

    photos = sorted((DATA / "photos").glob("*.jpg"))[:12]  # full-size: seconds of OCR
    for _ in range(4):
        pool = ProcessPool(OcrSpec("rapidocr"), 1)
        worker, outcome = pool._workers[0], {}

        def call() -> None:
            try:
                outcome["reply"] = worker.call([str(p) for p in photos])
            except BatchFailed as exc:
                outcome["failed"] = str(exc)

        caller = threading.Thread(target=call)
        caller.start()
        _wait_until(lambda: worker.state == "busy")
        pid = worker.process.pid
        closer = threading.Thread(target=lambda: outcome.setdefault("close", _outcome(pool.close)))
        closer.start()
        time.sleep(0.3)  # close() is now waiting for the busy worker
        os.kill(pid, signal.SIGKILL)
        closer.join(30)
        caller.join(30)
        assert outcome["close"] is None, outcome["close"]
        assert "reply" not in outcome and outcome["failed"].startswith("process died while handling it")
        assert worker.process is None and not Path(f"/proc/{pid}").exists()


def _outcome(call) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        return exc
    return None


def _wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
