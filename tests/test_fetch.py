"""The fetch stage against the real local server (tests/http_server.py): every injected fault ends
with the right outcome and reason, real images land content-addressed and intact."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pytest
from PIL import Image

from amlc.fetch import FetchConfig, Fetched, Fetcher, link_key, parse_retry_after
from http_server import DEFAULT_ROOT, Fault, ImageServer, rendered

# short timeouts and backoffs keep the whole file fast
FAST = FetchConfig(connect_timeout=2, read_timeout=1.0, retries=2, backoff_base=0.01, backoff_max=2,
                   max_bytes=2_000_000)
REAL = sorted(DEFAULT_ROOT.glob("*.jpg"))


def fetch_many(image_dir: Path, links: Sequence[str], config: FetchConfig = FAST) -> list[Fetched]:
    async def go() -> list[Fetched]:
        async with Fetcher(image_dir, config) as fetcher:
            # a hard ceiling so a broken retry loop fails the test instead of hanging it
            return await asyncio.wait_for(asyncio.gather(*(fetcher.fetch(link) for link in links)), 20)
    return asyncio.run(go())


def fetch_one(image_dir: Path, link: str, config: FetchConfig = FAST) -> Fetched:
    return fetch_many(image_dir, [link], config)[0]


def stored_files(image_dir: Path) -> list[Path]:
    return sorted(p for p in image_dir.rglob("*") if p.is_file())


def test_real_images_are_stored_content_addressed(image_server: ImageServer, tmp_path: Path) -> None:
    files = REAL[:12]
    got = fetch_many(tmp_path, [image_server.url(f"/images/I/{f.name}") for f in files])
    for file, result in zip(files, got):
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        assert result.error is None and result.status == 200 and result.attempts == 1
        assert (result.sha256, result.size) == (sha, len(data))
        assert result.path == tmp_path / sha[:2] / f"{sha}.jpg"
        assert result.path.read_bytes() == data
        with Image.open(file) as img:
            assert (result.width, result.height) == img.size
        assert image_server.hits[f"/images/I/{file.name}"] == 1
    assert len(stored_files(tmp_path)) == len({hashlib.sha256(f.read_bytes()).digest() for f in files})


def test_404_is_permanent_after_one_attempt(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/fault/404/images/I/{REAL[0].name}"
    got = fetch_one(tmp_path, image_server.url(path))
    assert (got.error, got.retryable, got.attempts, got.status, got.path) == ("http 404", False, 1, 404, None)
    assert image_server.hits[path] == 1


def test_missing_file_is_a_plain_404(image_server: ImageServer, tmp_path: Path) -> None:
    got = fetch_one(tmp_path, image_server.url("/images/I/doesnotexist.jpg"))
    assert (got.error, got.retryable, got.attempts) == ("http 404", False, 1)


def test_500_twice_then_success(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/fault/500x2/images/I/{REAL[1].name}"
    got = fetch_one(tmp_path, image_server.url(path))
    assert got.error is None and got.attempts == 3 and got.status == 200
    assert got.sha256 == hashlib.sha256(REAL[1].read_bytes()).hexdigest()
    assert image_server.hits[path] == 3


def test_500_forever_gives_up_retryable(image_server: ImageServer, tmp_path: Path) -> None:
    path = "/fault/503/images/I/" + REAL[1].name
    image_server.add_fault(path, Fault("status", 503))  # no Retry-After: our own backoff
    got = fetch_one(tmp_path, image_server.url(path))
    assert (got.error, got.retryable, got.attempts) == ("http 503", True, FAST.retries + 1)
    assert image_server.hits[path] == FAST.retries + 1


def test_429_retry_after_is_waited(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/fault/429x1/images/I/{REAL[2].name}"  # Retry-After: 1
    started = time.monotonic()
    got = fetch_one(tmp_path, image_server.url(path))
    assert got.error is None and got.attempts == 2
    assert time.monotonic() - started >= 0.95  # the server's 1 s, not our 10 ms backoff
    assert image_server.hits[path] == 2


def test_retry_after_is_capped_by_backoff_max(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/images/I/{REAL[2].name}"
    image_server.add_fault(path, Fault("status", 503, times=1, retry_after="3600"))
    got = fetch_one(tmp_path, image_server.url(path), replace(FAST, backoff_max=0.2))
    assert got.error is None and got.attempts == 2


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_stall_times_out_and_is_retryable(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/fault/stall/images/I/{REAL[3].name}"
    got = fetch_one(tmp_path, image_server.url(path), replace(FAST, retries=1))
    assert got.error is not None and got.error.startswith("timeout after 1s")
    assert got.retryable and got.attempts == 2 and got.path is None
    assert image_server.hits[path] == 2


def test_truncated_image_is_rejected(image_server: ImageServer, tmp_path: Path) -> None:
    got = fetch_one(tmp_path, image_server.url(f"/fault/truncate/images/I/{REAL[4].name}"))
    assert (got.error, got.retryable, got.attempts, got.status) == ("truncated image", False, 1, 200)
    assert stored_files(tmp_path) == []


def test_connection_cut_mid_body_is_retried(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/fault/cut/images/I/{REAL[4].name}"
    got = fetch_one(tmp_path, image_server.url(path))
    assert got.error is not None and "mid-body" in got.error
    assert got.retryable and got.attempts == FAST.retries + 1


def test_cut_once_then_whole(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/images/I/{REAL[5].name}"
    image_server.add_fault(path, Fault("cut", times=1))
    got = fetch_one(tmp_path, image_server.url(path))
    assert got.error is None and got.attempts == 2
    assert got.path is not None and got.path.read_bytes() == REAL[5].read_bytes()


def test_exotic_formats_are_not_decoded(image_server: ImageServer, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PCX")  # Pillow reads it; we do not
    image_server.add_bytes("/odd/label.pcx", buf.getvalue(), "image/x-pcx")
    got = fetch_one(tmp_path, image_server.url("/odd/label.pcx"))
    assert got.error is not None and got.error.startswith("not an image: image/x-pcx")


def test_html_is_not_an_image(image_server: ImageServer, tmp_path: Path) -> None:
    got = fetch_one(tmp_path, image_server.url("/fault/html/images/I/x.jpg"))
    assert got.error is not None and got.error.startswith("not an image: text/html")
    assert not got.retryable and got.attempts == 1


@pytest.mark.parametrize("spec", ["huge", "huge-chunked"])  # declared length, or only counted bytes
def test_oversized_body_is_refused(image_server: ImageServer, tmp_path: Path, spec: str) -> None:
    got = fetch_one(tmp_path, image_server.url(f"/fault/{spec}/x.jpg"))
    assert got.error is not None and got.error.startswith("too large")
    assert str(FAST.max_bytes) in got.error and not got.retryable and got.attempts == 1


@pytest.mark.parametrize("size", ["9000x9000", "100000x100000"])  # over our limit; over Pillow's too
def test_decompression_bomb_is_rejected(image_server: ImageServer, tmp_path: Path, size: str) -> None:
    got = fetch_one(tmp_path, image_server.url(f"/bomb/{size}.png"))
    assert got.error is not None and got.error.startswith("decompression bomb")
    assert not got.retryable and stored_files(tmp_path) == []
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's global is left alone


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    got = fetch_one(tmp_path, f"http://127.0.0.1:{port}/images/I/a.jpg", replace(FAST, retries=1))
    assert got.error is not None and got.error.startswith("cannot connect")
    assert got.retryable and got.attempts == 2


def test_same_link_concurrently_downloads_once(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/images/I/{REAL[6].name}"
    got = fetch_many(tmp_path, [image_server.url(path)] * 5)
    assert len({g.path for g in got}) == 1 and all(g.error is None for g in got)
    assert image_server.hits[path] == 1
    assert len(stored_files(tmp_path)) == 1


def test_same_bytes_under_two_links_are_stored_once(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/images/I/{REAL[7].name}"
    no_memo = replace(FAST, memo=0)
    first = fetch_one(tmp_path, image_server.url(path), no_memo)
    again = fetch_one(tmp_path, image_server.url(path), no_memo)
    other = fetch_one(tmp_path, image_server.url(path + "?mirror=1"), no_memo)
    assert first.path == again.path == other.path and first.sha256 == other.sha256
    assert image_server.hits[path] == 2 and image_server.hits[path + "?mirror=1"] == 1
    assert stored_files(tmp_path) == [first.path]


def test_repeated_link_in_one_session_is_answered_from_memory(image_server: ImageServer, tmp_path: Path) -> None:
    path = f"/images/I/{REAL[8].name}"

    async def twice() -> tuple[Fetched, Fetched]:
        async with Fetcher(tmp_path, FAST) as fetcher:
            return await fetcher.fetch(image_server.url(path)), await fetcher.fetch(image_server.url(path))

    first, second = asyncio.run(twice())
    assert first == second and first.error is None
    assert image_server.hits[path] == 1


def test_faults_do_not_disturb_the_rest_of_a_batch(image_server: ImageServer, tmp_path: Path) -> None:
    faults = ["404", "500x1", "stall", "truncate", "cut", "html", "huge", "reset"]
    good = [image_server.url(f"/images/I/{f.name}") for f in REAL[10:40]]
    bad = [image_server.url(f"/fault/{spec}/images/I/{REAL[0].name}") for spec in faults]
    links = [link for pair in zip(good, bad + [None] * len(good)) for link in pair if link]
    got = {g.link: g for g in fetch_many(tmp_path, links, replace(FAST, concurrency=8, per_host=4))}
    assert all(got[link].error is None and got[link].attempts == 1 for link in good)
    outcome = {spec: got[link].error is None for spec, link in zip(faults, bad)}
    assert outcome == {spec: spec == "500x1" for spec in faults}
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_rendered_formats_keep_their_extension(image_server: ImageServer, tmp_path: Path) -> None:
    got = fetch_many(tmp_path, [image_server.url(f"/render/320x200.{ext}") for ext in ("png", "webp", "jpg")])
    assert [g.path.suffix for g in got if g.path] == [".png", ".webp", ".jpg"]
    assert all((g.width, g.height) == (320, 200) for g in got)


def test_link_key() -> None:
    assert link_key("https://m.media-amazon.com/images/I/61I9XdN6OFL.jpg") == "61I9XdN6OFL"
    assert link_key("file:///data/img/41a%2Bb.jpg") == "41a+b"
    assert link_key("/data/img/abc.png?x=1") == "abc"


def test_server_script_mode_for_subprocess_tests(tmp_path: Path) -> None:
    script = Path(__file__).with_name("http_server.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--fault", "/images/I/=500x1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("serving http://127.0.0.1:")
        got = fetch_one(tmp_path, f"{line.split()[1]}/images/I/{REAL[0].name}")
        assert got.error is None and got.attempts == 2  # the prefix fault answered 500 once
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_stale_temp_files_of_a_killed_run_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    old, killed = tmp_path / "ab" / ".tmp-x.jpg", tmp_path / "cd" / f".tmp-{dead}-y.jpg"
    live = tmp_path / "ef" / f".tmp-{os.getppid()}-z.jpg"  # a running process may still be writing
    for tmp in (old, killed, live):
        tmp.parent.mkdir()
        tmp.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fetch_one(tmp_path, REAL[0].as_uri())  # entering the Fetcher sweeps
    assert not old.exists() and not killed.exists() and live.exists()


def test_unwritable_store_is_a_retryable_failure(tmp_path: Path) -> None:
    src = REAL[0]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    (tmp_path / sha[:2]).write_text("a file where the folder should be")
    got = fetch_one(tmp_path, src.as_uri(), replace(FAST, local_root=src.parent))
    assert got.error is not None and got.error.startswith("cannot write image") and got.retryable


def test_waiter_takes_over_when_the_first_caller_is_cancelled(image_server: ImageServer,
                                                             tmp_path: Path) -> None:
    path = f"/images/I/{REAL[11].name}"
    image_server.add_fault(path, Fault("slow", delay_s=0.4))  # well inside the 1 s read timeout

    async def go() -> Fetched:
        async with Fetcher(tmp_path, FAST) as fetcher:
            first = asyncio.create_task(fetcher.fetch(image_server.url(path)))
            await asyncio.sleep(0.1)
            second = asyncio.create_task(fetcher.fetch(image_server.url(path)))
            await asyncio.sleep(0.1)
            first.cancel()
            return await asyncio.wait_for(second, 10)

    got = asyncio.run(go())
    assert got.error is None and got.path is not None
    assert image_server.hits[path] == 2  # the cancelled download, then the waiter's own


def jpeg_with_thumbnail(main: bytes, thumbnail: bytes) -> bytes:
    """`main` carrying a whole JPEG (end marker included) in an APP1 segment, as a camera's EXIF
    thumbnail sits before the main image's scan."""
    payload = b"Exif\0\0" + thumbnail
    return main[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + main[2:]


def test_a_body_cut_short_is_refused_in_every_format(image_server: ImageServer, tmp_path: Path) -> None:
    thumbnail = min((p.read_bytes() for p in REAL), key=len)
    whole = jpeg_with_thumbnail(REAL[5].read_bytes(), thumbnail)
    png, webp = rendered(320, 200, "png"), rendered(320, 200, "webp")
    bodies = {"whole.jpg": whole,
              "trailing-bytes.jpg": whole + b"\0" * 64,  # after the end marker: harmless
              "cut.jpg": whole[: len(whole) * 3 // 4],   # the thumbnail's end marker is still there
              "cut.png": png[:-20], "cut.webp": webp[: len(webp) * 3 // 4]}
    for name, body in bodies.items():
        image_server.add_bytes(f"/cut/{name}", body, "image/jpeg")
    got = fetch_many(tmp_path, [image_server.url(f"/cut/{name}") for name in bodies])
    assert {name: g.error for name, g in zip(bodies, got)} == {
        "whole.jpg": None, "trailing-bytes.jpg": None, "cut.jpg": "truncated image",
        "cut.png": "truncated image", "cut.webp": "corrupt image: could not create decoder object"}


def test_the_free_space_reserve_holds_under_concurrent_writes(tmp_path, monkeypatch):
    """Two image writes that each fit the free space, but not both: the second waits for no
    disk figure to change (as when both check before either lands) and is refused."""
    import shutil
    import threading
    from collections import namedtuple

    from amlc import fetch
    from amlc.faults import DiskNearlyFull
    usage = namedtuple("usage", "total used free")
    reserve, size = 1_000_000, 600_000
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, reserve + size + size // 2))
    first_inside, let_go = threading.Event(), threading.Event()

    def first_write() -> None:
        with fetch.keep_free(tmp_path, size, reserve):
            first_inside.set()
            let_go.wait(5)
    writer = threading.Thread(target=first_write)
    writer.start()
    assert first_inside.wait(5)
    try:
        with pytest.raises(DiskNearlyFull):
            with fetch.keep_free(tmp_path, size, reserve):
                pass
    finally:
        let_go.set()
        writer.join()
    with fetch.keep_free(tmp_path, size, reserve):   # once the first write is over, room again
        pass
