"""Links to local files: refused at ingest unless the user names a folder, and then only
regular files inside it are read (symlinks and '..' resolved), capped by counted bytes and by
time, with no file's bytes in any error. Real files, real devices, the real CLI and store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from amlc.fetch import FetchConfig, Fetched, Fetcher
from amlc.localfiles import LocalFileError, read_local
from http_server import DEFAULT_ROOT, ImageServer
from store_helpers import amlc, amlc_json, query, write_csv

HEADER = ["index", "image_link", "group_id", "entity_name"]
REAL = sorted(DEFAULT_ROOT.glob("*.jpg"))
FAST = FetchConfig(read_timeout=5.0, retries=0, max_bytes=2_000_000)
RUN = ("run", "--stages", "fetch", "--exit-when-done", "--no-dashboard")
PASSWD = Path("/etc/passwd")


def fetch(image_dir: Path, links: list[str], root: Path | None) -> list[Fetched]:
    async def go() -> list[Fetched]:
        async with Fetcher(image_dir, replace(FAST, local_root=root)) as fetcher:
            # a ceiling, so a read that blocks fails the test instead of hanging it
            return await asyncio.wait_for(asyncio.gather(*(fetcher.fetch(link) for link in links)), 30)
    return asyncio.run(go())


def ingest(workdir: Path, links: list[str], *options: str) -> dict:
    rows = [[i, link, "1", "width"] for i, link in enumerate(links)]
    return amlc_json(workdir, "ingest", str(write_csv(workdir / "in.csv", HEADER, rows)), "--split", "t",
                     *options)


def rejects(workdir: Path) -> dict[int, str]:
    """Reject reasons by the index of the row (line 2 is index 0)."""
    return {line - 2: reason for line, reason in query(workdir / "amlc.db", "SELECT line, reason FROM rejects")}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of local images: one real photo, and every kind of thing that must not be read."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "good.jpg").write_bytes(REAL[0].read_bytes())
    (images / "escape.jpg").symlink_to(PASSWD)             # a symlink out of the folder
    (images / "inner.jpg").symlink_to(images / "good.jpg")  # a symlink that stays inside
    os.mkfifo(images / "pipe.jpg")                         # nobody ever writes to it
    (tmp_path / "outside.jpg").write_bytes(REAL[1].read_bytes())
    return images


def test_local_links_are_refused_at_ingest_without_a_folder(tmp_path: Path) -> None:
    links = ["file:///dev/zero", str(PASSWD), "images/a.jpg", "ftp://example.com/a.jpg",
             "https://m.media-amazon.com/images/I/a.jpg", "file://other-host/a.jpg"]
    report = ingest(tmp_path, links)
    assert report["rejected"] == 5 and report["inserted"] == 1
    why = rejects(tmp_path)
    for index in (0, 1, 2):
        assert why[index].startswith("a local file, not an http(s) link") and "--local-images DIR" in why[index]
    assert why[3] == "unsupported link scheme 'ftp': links are http(s) or local files"
    assert why[5] == "file link names another host (other-host)"
    assert query(tmp_path / "amlc.db", "SELECT link FROM images") == [(links[4],)]


def test_ingest_accepts_only_regular_files_inside_the_named_folder(tmp_path: Path, folder: Path) -> None:
    links = [(folder / "good.jpg").as_uri(), "good.jpg", str(folder / "inner.jpg"),
             str(folder / "escape.jpg"), str(folder / ".." / "outside.jpg"), str(folder / "sub"),
             str(folder / "pipe.jpg"), str(folder / "missing.jpg")]
    report = ingest(tmp_path, links, "--local-images", str(folder))
    assert report["inserted"] == 3 and report["rejected"] == 5
    why = rejects(tmp_path)
    assert why[3] == f"{folder / 'escape.jpg'} is outside the local images folder {folder}"
    assert why[4] == f"{folder / '..' / 'outside.jpg'} is outside the local images folder {folder}"
    assert why[5] == f"not a regular file (a directory): {folder / 'sub'}"
    assert why[6] == f"not a regular file (a FIFO): {folder / 'pipe.jpg'}"
    assert why[7] == f"no such file: {folder / 'missing.jpg'}"


def test_dev_zero_is_refused_even_inside_the_named_folder(tmp_path: Path) -> None:
    ingest(tmp_path, ["file:///dev/zero"], "--local-images", "/dev")
    assert rejects(tmp_path) == {0: "not a regular file (a character device): /dev/zero"}
    # the fetch stage refuses it too, before reading a byte (it used to read until MemoryError)
    got, = fetch(tmp_path / "store", ["file:///dev/zero"], Path("/dev"))
    assert got.error == "not a regular file (a character device): /dev/zero" and not got.retryable


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_inside_the_folder_is_not_read(tmp_path: Path) -> None:
    zero = tmp_path / "zero.jpg"  # /dev/zero under an innocent name; its size claims 0 bytes
    os.mknod(zero, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    got, = fetch(tmp_path / "store", [zero.as_uri()], tmp_path)
    assert got.error == f"not a regular file (a character device): {zero}"


def test_the_fetcher_reads_only_regular_files_inside_its_folder(tmp_path: Path, folder: Path) -> None:
    links = [(folder / "good.jpg").as_uri(), "good.jpg", str(folder / "inner.jpg"),
             str(folder / "escape.jpg"), str(folder / "pipe.jpg"), str(folder / "sub"),
             str(tmp_path / "outside.jpg")]
    good, relative, inner, escape, pipe, sub, outside = fetch(tmp_path / "store", links, folder)
    sha = hashlib.sha256(REAL[0].read_bytes()).hexdigest()
    assert good.error is None and good.sha256 == relative.sha256 == inner.sha256 == sha
    assert good.path is not None and good.path.read_bytes() == REAL[0].read_bytes()
    assert escape.error == f"{folder / 'escape.jpg'} is outside the local images folder {folder}"
    assert pipe.error == f"not a regular file (a FIFO): {folder / 'pipe.jpg'}"  # and it did not hang
    assert sub.error == f"not a regular file (a directory): {folder / 'sub'}"
    assert outside.error is not None and "outside the local images folder" in outside.error
    # without a folder the fetcher reads no local file at all
    refused, = fetch(tmp_path / "store", [(folder / "good.jpg").as_uri()], None)
    assert refused.error is not None and "only with --local-images DIR" in refused.error


def test_a_local_read_is_capped_by_counted_bytes_and_by_time(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(REAL[0].read_bytes() + bytes(3_000_000))
    got, = fetch(tmp_path / "store", [str(big)], tmp_path)
    assert got.error == f"too large: > {FAST.max_bytes} bytes" and not got.retryable
    with pytest.raises(LocalFileError) as slow:
        read_local(big, tmp_path, 10_000_000, seconds=0)  # the deadline passes after one chunk
    assert slow.value.reason == f"timeout after 0s reading {big}" and slow.value.retryable


def test_an_error_never_carries_the_file_s_bytes(tmp_path: Path, image_server: ImageServer) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_text("SECRET-TOKEN-0123456789\n")
    truncated = tmp_path / "broken.jpg"
    truncated.write_bytes(REAL[0].read_bytes()[:1500])
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(png, format="PNG")
    renamed = tmp_path / "chunk.png"  # Pillow's own message would quote the chunk's name: b'Q9zK'
    renamed.write_bytes(png.getvalue().replace(b"IEND", b"Q9zK"))
    got_secret, got_truncated, got_renamed = fetch(tmp_path / "store", [str(secret), str(truncated),
                                                                        str(renamed)], tmp_path)
    assert got_secret.error == "not an image: no content-type, 24 bytes"
    assert got_truncated.error == "truncated image"
    assert got_renamed.error == "corrupt image: broken PNG file"
    html, = fetch(tmp_path / "store", [image_server.url("/fault/html/images/I/x.jpg")], None)
    assert html.error is not None and html.error.startswith("not an image: text/html")
    assert html.error.endswith(" bytes") and "<" not in html.error


def test_passwd_never_lands_in_the_store(tmp_path: Path) -> None:
    ingest(tmp_path, [PASSWD.as_uri()], "--local-images", "/etc")  # a regular file: accepted
    amlc(tmp_path, *RUN, "--local-images", "/etc")
    store = tmp_path / "amlc.db"
    (error,), = query(store, "SELECT last_error FROM jobs WHERE stage = 'fetch' AND state = 'failed'")
    assert error == f"not an image: no content-type, {PASSWD.stat().st_size} bytes"
    with sqlite3.connect(store) as con:
        dump = "\n".join(con.iterdump())
    lines = [line for line in PASSWD.read_text().splitlines() if len(line) > 8]
    assert lines and not [line for line in lines if line in dump]
    assert PASSWD.read_bytes()[:16].decode() not in dump


def test_amlc_run_reads_local_links_only_with_their_folder(tmp_path: Path, folder: Path) -> None:
    ingest(tmp_path, [str(folder / "good.jpg")], "--local-images", str(folder))
    amlc(tmp_path, *RUN)
    store = tmp_path / "amlc.db"
    (state, error), = query(store, "SELECT state, last_error FROM jobs WHERE stage = 'fetch'")
    assert state == "failed" and "amlc run reads local files only with --local-images DIR" in error
    amlc(tmp_path, *RUN, "--local-images", str(folder), "--retry-failed")
    assert query(store, "SELECT state FROM jobs WHERE stage = 'fetch'") == [("done",)]
    assert query(store, "SELECT sha256 FROM images") == [(hashlib.sha256(REAL[0].read_bytes()).hexdigest(),)]


def test_a_local_copy_that_escapes_the_folder_is_not_used(tmp_path: Path, image_server: ImageServer) -> None:
    """--local-images serves an http link from a file of the same name, but never through a
    symlink out of the folder: the image is downloaded instead."""
    copies = tmp_path / "copies"
    copies.mkdir()
    name = REAL[2].name
    (copies / name).symlink_to(PASSWD)
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "in.csv", HEADER,
                                           [[0, image_server.url(f"/images/I/{name}"), "1", "width"]])),
         "--split", "t")
    amlc(tmp_path, *RUN, "--local-images", str(copies))
    assert query(tmp_path / "amlc.db", "SELECT sha256 FROM images") == [
        (hashlib.sha256(REAL[2].read_bytes()).hexdigest(),)]
    assert image_server.hits[f"/images/I/{name}"] == 1


def test_a_relative_local_images_folder_serves_both_kinds_of_link(tmp_path: Path, image_server: ImageServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copies").mkdir()
    for src in REAL[3:5]:
        (tmp_path / "copies" / src.name).write_bytes(src.read_bytes())
    refused = image_server.url(f"/fault/404/images/I/{REAL[3].name}")  # only the copy can answer
    ingest(tmp_path, [refused, REAL[4].name], "--local-images", "copies")  # the second: a path in it
    amlc(tmp_path, *RUN, "--local-images", "copies")
    store = tmp_path / "amlc.db"
    assert query(store, "SELECT state FROM jobs WHERE stage = 'fetch'") == [("done",), ("done",)]
    assert sorted(query(store, "SELECT sha256 FROM images")) == sorted(
        (hashlib.sha256(src.read_bytes()).hexdigest(),) for src in REAL[3:5])
    assert sum(image_server.hits.values()) == 0


def test_the_local_copy_check_leaves_the_event_loop_free(tmp_path, monkeypatch):
    """A --local-images folder on a mount that hangs must not stall the daemon: the check for a
    local copy runs in a thread while the loop goes on (here a check that takes 0.5 s)."""
    import threading
    import time

    from amlc import localfiles
    from amlc.jobs import RetryPolicy
    from amlc.stages import FetchStage
    (tmp_path / "a.jpg").write_bytes(b"x")
    checked_in = []

    def slow_check(path, root):
        checked_in.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.5)
        return True
    monkeypatch.setattr(localfiles, "is_local_copy", slow_check)
    stage = FetchStage(None, 1, RetryPolicy(1, 0.0), tmp_path, tmp_path)

    async def go():
        ticks = 0

        async def heartbeat():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1
        beat = asyncio.create_task(heartbeat())
        source = await stage.source("https://x.test/images/I/a.jpg")
        beat.cancel()
        return source, ticks
    source, ticks = asyncio.run(go())
    assert source == str(tmp_path.absolute() / "a.jpg") and checked_in == [False]
    assert ticks >= 5   # the loop kept running while the check waited
