"""Images on local disk: which links may name them, and reading them safely.

Links are http(s) unless the user names a folder of local images (`--local-images DIR`); then a
`file://` link or a path (absolute, or relative to that folder) may name a regular file inside
it. Symlinks and `..` are resolved before the check, so nothing outside the folder is read;
devices, FIFOs and directories are refused; a read is capped by counted bytes (never by the size
a file claims: /dev/zero claims 0) and by time, like a download. Errors name the file, never
its bytes.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")

CHUNK = 1 << 16
WEB_SCHEMES = ("http", "https")
WEB_LINK = re.compile(r"https?://[^/?#]")  # the usual case, checked without urlsplit's cost
KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"}


class LocalFileError(Exception):
    """A local image that may not or cannot be read; `reason` is safe to store and show."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def local_path(link: str) -> Path | None:
    """The file a `file://` link or plain path names; None for http(s) links."""
    parts = urlsplit(link)
    if parts.scheme.lower() in WEB_SCHEMES:
        return None
    return Path(unquote(parts.path)) if parts.scheme.lower() == "file" else Path(link)


def inside(path: Path, root: Path) -> Path:
    """`path` (relative paths are taken from `root`) with symlinks and `..` resolved; raises
    unless the result lies inside `root`."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root / path))
    if real != real_root and real_root not in real.parents:
        raise LocalFileError(f"{path} is outside the local images folder {root}")
    return real


def link_problem(link: str, root: Path | None) -> str | None:
    """Why ingest must refuse a link (None when it may be ingested): a link that is not
    http(s) must name a regular file inside `root`, and only when the user named one."""
    if WEB_LINK.match(link):
        return None
    parts = urlsplit(link)
    scheme = parts.scheme.lower()
    if scheme in WEB_SCHEMES:
        return None if parts.netloc else f"{scheme} link without a host"
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        return f"file link names another host ({parts.netloc})"
    if scheme not in ("", "file"):
        return f"unsupported link scheme {scheme!r}: links are http(s) or local files"
    if root is None:
        return ("a local file, not an http(s) link: local files are read only with "
                "--local-images DIR naming the folder that holds them")
    try:
        path = local_path(link)
        assert path is not None
        _regular(inside(path, root), path)
    except LocalFileError as exc:
        return exc.reason
    return None


def is_local_copy(path: Path, root: Path) -> bool:
    """Whether `path` is a regular file inside `root` (a local copy the daemon may use)."""
    try:
        _regular(inside(path, root), path)
    except LocalFileError:
        return False
    return True


def _regular(real: Path, shown: Path) -> None:
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise LocalFileError(f"no such file: {shown}") from None
    except OSError as exc:
        raise LocalFileError(f"cannot read {shown}: {exc.strerror}") from None
    _refuse_unless_regular(mode, shown)


def _refuse_unless_regular(mode: int, shown: Path) -> None:
    if not stat.S_ISREG(mode):
        kind = KINDS.get(stat.S_IFMT(mode), "not a plain file")
        raise LocalFileError(f"not a regular file ({kind}): {shown}")


def read_local(path: Path, root: Path | None, max_bytes: int, seconds: float) -> bytes:
    """The bytes of a regular file inside `root`, at most `max_bytes` of them, read within
    `seconds`; raises LocalFileError otherwise."""
    if root is None:
        raise LocalFileError(f"local file {path} not read: amlc run reads local files only "
                             "with --local-images DIR naming their folder")
    real = inside(path, root)
    deadline = time.monotonic() + seconds
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the resolved path
        # must not have been swapped for a symlink since it was checked.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LocalFileError(f"no such file: {path}") from None
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        _refuse_unless_regular(os.fstat(fd).st_mode, path)
        return _read_capped(fd, path, max_bytes, deadline, seconds)
    finally:
        os.close(fd)


def _read_capped(fd: int, path: Path, max_bytes: int, deadline: float, seconds: float) -> bytes:
    data = bytearray()
    while chunk := os.read(fd, CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise LocalFileError(f"too large: > {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise LocalFileError(f"timeout after {seconds:g}s reading {path}", retryable=True)
    return bytes(data)


async def read_local_async(path: Path, root: Path | None, max_bytes: int, seconds: float) -> bytes:
    """read_local off the event loop, given up after `seconds` even when a read blocks for good
    (a hung network mount): the read runs in a daemon thread, so it never holds up a worker,
    the shared thread pool or the process's exit."""
    try:
        return await asyncio.wait_for(_in_daemon_thread(read_local, path, root, max_bytes, seconds),
                                      seconds + 1)
    except asyncio.TimeoutError:
        raise LocalFileError(f"timeout after {seconds:g}s reading {path}", retryable=True) from None


async def is_local_copy_async(path: Path, root: Path, seconds: float) -> bool:
    """is_local_copy off the event loop, in a daemon thread; a check that does not answer within
    `seconds` (a hung mount) counts as no local copy."""
    try:
        return await asyncio.wait_for(_in_daemon_thread(is_local_copy, path, root), seconds)
    except asyncio.TimeoutError:
        return False


def _in_daemon_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # given up on already
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop closed while the read was stuck: nobody waits any more

    threading.Thread(target=work, name="amlc-local-read", daemon=True).start()
    return future
