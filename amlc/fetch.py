"""Fetch stage: image link -> checked, content-addressed file.

One aiohttp session with bounded concurrency; per-attempt connect/read timeouts; exponential
backoff with full jitter for transient failures (5xx, 429, timeouts, dropped connections),
honouring Retry-After; a size cap enforced while streaming; the bytes are checked with Pillow
(photo formats only, bomb guard, a truncated body refused) and written atomically to
`image_dir/<sha[:2]>/<sha256>.<ext>`, so identical bytes are stored once.

`Fetcher.fetch` never raises for a per-URL fault: it returns a `Fetched` with `error` set and
`retryable` telling the store whether a later try may succeed.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Iterator
from urllib.parse import unquote, urlsplit

import aiohttp
from PIL import Image, UnidentifiedImageError

from .faults import DiskNearlyFull, is_fatal
from .localfiles import LocalFileError, local_path, read_local_async

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 16
STALE_TEMP_SECONDS = 60.0
DETAIL = re.compile(r"\s*[(:]|\s*b['\"]")  # where a decoder's message starts quoting the file
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
              "TIFF": "tif", "AVIF": "avif"}


@dataclass(frozen=True)
class FetchConfig:
    concurrency: int = 128         # open connections in all (TCPConnector limit)
    per_host: int = 128            # open connections per host; the CDN is one host
    connect_timeout: float = 10    # seconds to open a connection
    read_timeout: float = 30       # seconds of silence while waiting for headers or body bytes
    total_timeout: float = 300     # seconds for one attempt, so a slow drip cannot hold a slot forever
    retries: int = 4               # extra attempts after the first for transient failures
    backoff_base: float = 0.5      # seconds; attempt n waits uniform(0, base * 2**(n-1)) ("full jitter")
    backoff_max: float = 30        # cap on one wait, Retry-After included
    max_bytes: int = 25_000_000    # larger bodies are refused (Content-Length or counted bytes)
    max_pixels: int = 60_000_000   # larger declared dimensions are a decompression bomb
    user_agent: str = "amlc/0.1"
    memo: int = 4096               # recent successful links answered without a download (0: off)
    local_root: Path | None = None  # the only folder local links are read from (None: none)
    min_free_bytes: int = 64_000_000  # stop fetching below this much free disk: the store needs room
                                      # to record what was fetched (0: write until the disk is full)


@dataclass(frozen=True)
class Fetched:
    link: str
    path: Path | None          # content-addressed file, None on failure
    sha256: str | None
    width: int | None
    height: int | None
    size: int | None           # bytes
    error: str | None          # why it failed, e.g. "http 404", "truncated image"; None on success
    retryable: bool            # True when a later try may succeed (5xx, 429, timeouts, resets)
    attempts: int              # HTTP attempts made (1 for local files)
    status: int | None         # last HTTP status, None for local files or no response


class FetchFailure(Exception):
    """One attempt's failure, with what the retry loop needs to decide."""

    def __init__(self, reason: str, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Checked:
    """Bytes that decoded as an image."""
    sha256: str
    ext: str
    width: int
    height: int


def link_key(link: str) -> str:
    """The image id of a link or path: `.../images/I/41abc.jpg` -> `41abc`."""
    name = unquote(urlsplit(link).path).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def stored_path(image_dir: Path, sha: str, ext: str) -> Path:
    return image_dir / sha[:2] / f"{sha}.{ext}"


# ---------------------------------------------------------------- decode check (worker thread)

def _decoders() -> tuple[str, ...]:
    # Only formats a product photo comes in: Pillow's other plugins (EPS runs Ghostscript, and
    # many rarely used parsers) never see downloaded bytes.
    Image.init()
    return tuple(fmt for fmt in EXTENSIONS if fmt in Image.OPEN)


DECODERS = _decoders()


def check_image(data: bytes, max_pixels: int, content_type: str = "") -> Checked:
    """Check that `data` is a whole image of a photo format and a sane size; raise FetchFailure
    (permanent) when it is not."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODERS) as img:
            fmt, (width, height) = img.format or "", img.size
            _guard_pixels(width, height, max_pixels)
            _check_complete(img, data)
    except FetchFailure:
        raise
    except Image.DecompressionBombError as exc:
        raise FetchFailure(f"decompression bomb: {exc}", False) from exc
    except UnidentifiedImageError as exc:
        # what the server said and how much, never the bytes: a local file could be a secret
        kind = content_type or "no content-type"
        raise FetchFailure(f"not an image: {kind}, {len(data)} bytes", False) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        # Pillow's details quote the file's bytes ("chunk b'IE\x80D'", "compression (11468800)"):
        # keep only the words before them
        detail = DETAIL.split(text, 1)[0] or type(exc).__name__
        reason = "truncated image" if "truncated" in text.lower() else f"corrupt image: {detail}"
        raise FetchFailure(reason, False) from exc
    ext = EXTENSIONS.get(fmt, fmt.lower() or "bin")
    return Checked(hashlib.sha256(data).hexdigest(), ext, width, height)


def _check_complete(img: Image.Image, data: bytes) -> None:
    """What goes wrong in transit is a body cut short: catch that without decoding pixels
    where the format allows (OCR decodes them anyway; decoding here cost as much CPU as the
    whole download). A JPEG is whole when its end-of-image marker follows the start of its
    scan, where Pillow's parser stopped (inside scan data every 0xFF is followed by 0x00 or a
    restart marker, so FF D9 is the end; a thumbnail's marker earlier in the file does not
    count). A PNG is read through IEND with every chunk's CRC. Other formats are decoded, at
    1/8 scale where possible."""
    if img.format == "JPEG":
        if data.find(b"\xff\xd9", img.fp.tell()) < 0:
            raise FetchFailure("truncated image", False)
    elif img.format == "PNG":
        img.verify()
    else:
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()


def _guard_pixels(width: int, height: int, max_pixels: int) -> None:
    # Our own limit, checked on the declared size before any pixel is decoded; Pillow's global
    # MAX_IMAGE_PIXELS stays untouched (other threads may rely on it).
    if width * height > max_pixels:
        raise FetchFailure(f"decompression bomb: {width}x{height} = {width * height} pixels "
                           f"> {max_pixels}", False)


def store_bytes(image_dir: Path, data: bytes, checked: Checked, min_free_bytes: int = 0) -> Path:
    """Write once under the content address; a temp file + rename keeps readers from half files."""
    path = stored_path(image_dir, checked.sha256, checked.ext)
    if path.is_file() and path.stat().st_size == len(data):
        return path  # same bytes already stored
    with keep_free(image_dir, len(data), min_free_bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=f".{checked.ext}", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)  # atomic; concurrent writers of the same bytes both succeed
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


_reserved = 0                       # bytes of image writes under way in this process
_reserve_lock = threading.Lock()    # writes run in several threads at once


@contextmanager
def keep_free(image_dir: Path, size: int, min_free_bytes: int) -> Iterator[None]:
    """Around a write of `size` bytes: refuse it if it would leave less than `min_free_bytes`
    free, counting the writes still under way in other threads (each saw the same free space
    before any of them landed). Images filling the disk to the last byte would leave the store
    unable to record the images already fetched."""
    global _reserved
    if min_free_bytes <= 0:
        yield
        return
    with _reserve_lock:
        free = shutil.disk_usage(image_dir).free - _reserved
        if free - size < min_free_bytes:
            raise DiskNearlyFull(free, min_free_bytes)
        _reserved += size
    try:
        yield
    finally:
        with _reserve_lock:
            _reserved -= size


def check_and_store(image_dir: Path, data: bytes, max_pixels: int, content_type: str,
                    min_free_bytes: int = 0) -> tuple[Path, Checked]:
    checked = check_image(data, max_pixels, content_type)
    try:
        return store_bytes(image_dir, data, checked, min_free_bytes), checked
    except OSError as exc:
        if is_fatal(exc):  # a full disk is no link's fault: the run stops and says so
            raise
        raise FetchFailure(f"cannot write image: {exc}", True) from exc  # permissions: retry later


def sweep_temp_files(image_dir: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove temp files a killed process left behind: its pid is gone, or the file is old
    (a live temp file exists for milliseconds)."""
    cutoff = time.time() - older_than
    removed = 0
    for tmp in image_dir.glob("*/.tmp-*"):
        try:
            if not _writer_alive(tmp.name) or tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # its writer finished, or another process swept it
    return removed


def _writer_alive(name: str) -> bool:
    """Whether the process named in `.tmp-<pid>-...` still runs (unknown names count as alive)."""
    pid = name.split("-")[1] if name.count("-") >= 2 else ""
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# ---------------------------------------------------------------- retry timing

def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, config: FetchConfig, retry_after: float | None) -> float:
    """Wait before attempt `attempt + 1`: the server's Retry-After if given, else full jitter."""
    if retry_after is not None:
        return min(retry_after, config.backoff_max)
    return random.uniform(0, min(config.backoff_max, config.backoff_base * 2 ** (attempt - 1)))


# ---------------------------------------------------------------- the fetcher

class Fetcher:
    """Async context manager owning one aiohttp session; `fetch(link)` is safe to call concurrently."""

    def __init__(self, image_dir: Path, config: FetchConfig = FetchConfig()) -> None:
        self.image_dir = Path(image_dir)
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, asyncio.Future[Fetched]] = {}
        self._memo: OrderedDict[str, Fetched] = OrderedDict()

    async def __aenter__(self) -> Fetcher:
        c = self.config
        self.image_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(sweep_temp_files, self.image_dir)
        connector = aiohttp.TCPConnector(limit=c.concurrency, limit_per_host=c.per_host, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=c.total_timeout, sock_connect=c.connect_timeout,
                                        sock_read=c.read_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              headers={"User-Agent": c.user_agent})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, link: str) -> Fetched:
        """Download (or copy) and check one image; concurrent calls for one link share the work."""
        remembered = self._memo.get(link)
        if remembered is not None and remembered.path is not None and remembered.path.is_file():
            self._memo.move_to_end(link)
            return remembered
        while (pending := self._inflight.get(link)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we were cancelled
                # the caller that owned the download was cancelled: take it over
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._inflight[link] = future
        try:
            result = await self._fetch_uncached(link)
            future.set_result(result)
            self._remember(result)
            return result
        except asyncio.CancelledError:
            future.cancel()  # a waiter takes over (see above)
            raise
        except BaseException as exc:  # a bug, not a per-URL fault: waiters get it as well
            future.set_exception(exc)
            future.exception()  # marked retrieved, so an unawaited future logs nothing
            raise
        finally:
            del self._inflight[link]

    def _remember(self, result: Fetched) -> None:
        if self.config.memo <= 0 or result.error is not None:
            return
        self._memo[result.link] = result
        while len(self._memo) > self.config.memo:
            self._memo.popitem(last=False)

    async def _fetch_uncached(self, link: str) -> Fetched:
        path = local_path(link)
        if path is not None:
            return await self._copy_local(link, path)
        return await self._download(link)

    async def _copy_local(self, link: str, path: Path) -> Fetched:
        c = self.config
        try:
            data = await read_local_async(path, c.local_root, c.max_bytes, c.read_timeout)
            stored, checked = await asyncio.to_thread(check_and_store, self.image_dir, data, c.max_pixels,
                                                      "", c.min_free_bytes)
        except LocalFileError as exc:
            return _failed(link, FetchFailure(exc.reason, exc.retryable), attempts=1)
        except FetchFailure as failure:
            return _failed(link, failure, attempts=1)
        return _succeeded(link, stored, checked, len(data), attempts=1, status=None)

    async def _download(self, link: str) -> Fetched:
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            try:
                data, status, content_type = await self._get(link)
                c = self.config
                stored, checked = await asyncio.to_thread(
                    check_and_store, self.image_dir, data, c.max_pixels, content_type, c.min_free_bytes)
                return _succeeded(link, stored, checked, len(data), attempt, status)
            except FetchFailure as failure:
                failure.status = failure.status or status  # a decode failure still had an HTTP answer
                if not failure.retryable or attempt > self.config.retries:
                    return _failed(link, failure, attempt)
                await asyncio.sleep(backoff_delay(attempt, self.config, failure.retry_after))

    async def _get(self, link: str) -> tuple[bytes, int, str]:
        """One attempt: status check and a size-capped body; every transport fault -> FetchFailure."""
        assert self._session is not None, "use `async with Fetcher(...)`"
        c = self.config
        try:
            async with self._session.get(link, allow_redirects=True) as resp:
                _raise_for_status(resp, c)
                data = await _read_capped(resp, c.max_bytes)
                return data, resp.status, resp.headers.get("Content-Type", "")
        except FetchFailure:
            raise
        except aiohttp.ServerTimeoutError as exc:
            raise FetchFailure(_timeout_reason(exc, c), True) from exc
        except asyncio.TimeoutError as exc:
            raise FetchFailure(f"timeout after {c.total_timeout:g}s (whole attempt)", True) from exc
        except aiohttp.ClientPayloadError as exc:
            raise FetchFailure(f"connection broke mid-body{_received(exc)}", True) from exc
        except aiohttp.InvalidURL as exc:
            raise FetchFailure(f"invalid url: {exc}", False) from exc
        except aiohttp.ClientConnectorError as exc:
            raise FetchFailure(f"cannot connect: {exc}", True) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise FetchFailure(f"connection error: {type(exc).__name__}: {exc}", True) from exc


def _received(exc: Exception) -> str:
    m = re.search(r"received \d+ of \d+ bytes", str(exc))
    return f" ({m[0]})" if m else f": {type(exc).__name__}"


def _timeout_reason(exc: Exception, c: FetchConfig) -> str:
    if "connect" in str(exc).lower():
        return f"connect timeout after {c.connect_timeout:g}s"
    return f"timeout after {c.read_timeout:g}s without data"


def _raise_for_status(resp: aiohttp.ClientResponse, c: FetchConfig) -> None:
    if resp.status == 200:
        length = resp.content_length
        if length is not None and length > c.max_bytes:
            raise FetchFailure(f"too large: Content-Length {length} > {c.max_bytes} bytes", False, 200)
        return
    retry_after = None
    if resp.status in (429, 503):
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    raise FetchFailure(f"http {resp.status}", resp.status in RETRYABLE_STATUS or resp.status >= 500,
                       resp.status, retry_after)


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise FetchFailure(f"too large: > {max_bytes} bytes", False, resp.status)
    length = resp.content_length
    if length is not None and "Content-Encoding" not in resp.headers and len(buf) != length:
        # aiohttp normally raises ClientPayloadError first; be sure
        raise FetchFailure(f"connection broke mid-body: {len(buf)} of {length} bytes", True, resp.status)
    return bytes(buf)


def _succeeded(link: str, path: Path, checked: Checked, size: int, attempts: int,
               status: int | None) -> Fetched:
    return Fetched(link, path, checked.sha256, checked.width, checked.height, size,
                   None, False, attempts, status)


def _failed(link: str, failure: FetchFailure, attempts: int) -> Fetched:
    return Fetched(link, None, None, None, None, None, failure.reason, failure.retryable,
                   attempts, failure.status)
