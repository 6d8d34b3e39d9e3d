"""A real aiohttp image server with fault injection, for tests, benchmarks and subprocess tests.

Paths it answers (GET):
  /images/I/<name>          the file <root>/<name> (real product images by default)
  /render/<W>x<H>.<fmt>     a rendered image (png, jpg, webp), made on first use
  /bomb/<W>x<H>.png         a tiny PNG that declares W x H pixels (a decompression bomb)
  /fault/<spec>/<rest>      <rest> served through the fault <spec> (see Fault.parse)
  any path given to add_bytes()
A fault can also be attached to a path or path prefix with add_fault(). Hits are counted per
path (with its query string, if any), after the fault has been chosen.

In-process:  server = ImageServer(root).start(); server.url("/images/I/x.jpg"); server.stop()
As a script: python tests/http_server.py --root DIR --port 0 --latency-ms 30
             (prints "serving http://127.0.0.1:PORT" once it accepts connections)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import signal
import socket
import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from aiohttp import web
from PIL import Image, ImageDraw

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test_images"
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
KINDS = ("status", "stall", "truncate", "cut", "reset", "html", "huge", "slow")


@dataclass(frozen=True)
class Fault:
    kind: str                      # one of KINDS
    status: int = 500              # for kind "status"
    times: int | None = None       # fail this many hits of the path, then serve normally; None: always
    retry_after: str | None = None # Retry-After header sent with a status fault
    stall_s: float = 5.0           # "stall": seconds before anything is sent
    huge_bytes: int = 30_000_000   # "huge": body size
    chunked: bool = False          # "huge": without Content-Length, so only counting bytes catches it
    delay_s: float = 0.0           # "slow": extra latency before a normal answer

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """`404`, `500x2` (twice, then OK), `429x1` (Retry-After: 1), `503x1`, `stall`, `truncate`,
        `cut` (connection closed mid-body), `reset` (closed before any answer), `html`, `huge`,
        `huge-chunked`, `slow` (1 s extra)."""
        m = re.fullmatch(r"(\d{3})(?:x(\d+))?", spec)
        if m:
            status, times = int(m[1]), int(m[2]) if m[2] else None
            return cls("status", status, times, "1" if status in (429, 503) else None)
        if spec == "huge-chunked":
            return cls("huge", chunked=True)
        if spec == "slow":
            return cls("slow", delay_s=1.0)
        if spec not in KINDS:
            raise ValueError(f"unknown fault spec {spec!r}")
        return cls(spec)

    def active(self, hit: int) -> bool:
        return self.times is None or hit <= self.times


class ImageServer:
    """The server on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, root: Path = DEFAULT_ROOT, latency_ms: float = 0.0, port: int = 0) -> None:
        self.root = Path(root)
        self.latency = latency_ms / 1000
        self._want_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._faults: dict[str, Fault] = {}
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ public API
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    @property
    def hits(self) -> Counter[str]:
        """A snapshot: path (with query) -> requests answered."""
        with self._lock:
            return Counter(self._hits)

    def add_fault(self, path: str, fault: Fault | str) -> None:
        """Attach a fault to an exact path, or to every path under it when it ends with '/'."""
        with self._lock:
            self._faults[path] = Fault.parse(fault) if isinstance(fault, str) else fault

    def add_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._lock:
            self._blobs[path] = (data, content_type)

    def reset(self) -> None:
        """Forget hits, faults and added bytes (between tests sharing one server)."""
        with self._lock:
            self._hits.clear()
            self._faults.clear()
            self._blobs.clear()

    def start(self) -> ImageServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="image-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("image server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ server thread
    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        # short shutdown_timeout: stalled handlers are cancelled rather than awaited
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._want_port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()

    async def _shutdown(self) -> None:
        assert self._runner is not None and self._loop is not None
        await self._runner.cleanup()
        # handlers still sleeping (stalls) are cancelled, so the loop closes without warnings
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._loop.call_soon(self._loop.stop)

    # ------------------------------------------------------------ requests
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        fault, inner = self._fault_for(path)
        with self._lock:
            self._hits[request.path_qs] += 1
            hit = self._hits[request.path_qs]
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None and fault.active(hit):
            return await self._inject(request, fault, inner)
        body, ctype = self._content(inner)
        return web.Response(body=body, content_type=ctype)

    def _fault_for(self, path: str) -> tuple[Fault | None, str]:
        if path.startswith("/fault/"):
            spec, _, rest = path[len("/fault/"):].partition("/")
            return Fault.parse(spec), "/" + rest
        with self._lock:
            if path in self._faults:
                return self._faults[path], path
            prefixes = [p for p in self._faults if p.endswith("/") and path.startswith(p)]
            return (self._faults[max(prefixes, key=len)], path) if prefixes else (None, path)

    def _content(self, path: str) -> tuple[bytes, str]:
        with self._lock:
            blob = self._blobs.get(path)
        if blob is not None:
            return blob
        if m := re.fullmatch(r"/render/(\d+)x(\d+)\.(png|jpg|jpeg|webp)", path):
            return rendered(int(m[1]), int(m[2]), m[3]), CONTENT_TYPES[m[3]]
        if m := re.fullmatch(r"/bomb/(\d+)x(\d+)\.png", path):
            return png_bomb(int(m[1]), int(m[2])), "image/png"
        if m := re.fullmatch(r"/images/I/([^/]+)", path):
            file = self.root / m[1]
            if file.is_file():
                ext = file.suffix.lstrip(".").lower()
                return file.read_bytes(), CONTENT_TYPES.get(ext, "application/octet-stream")
        raise web.HTTPNotFound()

    async def _inject(self, request: web.Request, fault: Fault, inner: str) -> web.StreamResponse:
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return web.Response(status=fault.status, text=f"injected {fault.status}", headers=headers)
        if fault.kind == "stall":
            await asyncio.sleep(fault.stall_s)
        elif fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        elif fault.kind == "html":
            return web.Response(text="<!DOCTYPE html><html><body>Page not found</body></html>",
                                content_type="text/html")
        elif fault.kind == "huge":
            return await _stream_zeros(request, fault.huge_bytes, fault.chunked)
        elif fault.kind == "reset":
            _drop(request)
            return web.Response()
        body, ctype = self._content(inner)
        if fault.kind == "truncate":  # a complete HTTP answer whose image is cut short
            return web.Response(body=body[: len(body) * 2 // 3], content_type=ctype)
        if fault.kind == "cut":  # the connection dies mid-body
            resp = web.StreamResponse(headers={"Content-Type": ctype})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            _drop(request)
            return resp
        return web.Response(body=body, content_type=ctype)


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


async def _stream_zeros(request: web.Request, size: int, chunked: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    if chunked:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = size
    await resp.prepare(request)
    chunk = b"\0" * (1 << 16)
    try:
        for _ in range(0, size, len(chunk)):
            await resp.write(chunk)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up once it saw enough, as it should
    return resp


@lru_cache(maxsize=64)
def rendered(width: int, height: int, fmt: str = "png") -> bytes:
    """A deterministic picture with some structure (so JPEG has real entropy data)."""
    img = Image.new("RGB", (width, height), (240, 240, 235))
    draw = ImageDraw.Draw(img)
    for i in range(0, max(width, height), 16):
        draw.line([(i, 0), (0, i)], fill=(i % 256, (3 * i) % 256, 90), width=3)
    draw.text((10, 10), f"{width}x{height}", fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring width x height, with almost no data behind it."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve images with fault injection on 127.0.0.1.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder served under /images/I/")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--fault", action="append", default=[], metavar="PATH=SPEC",
                        help="attach a fault, e.g. /images/I/x.jpg=500x2 or /images/I/=slow")
    args = parser.parse_args()
    server = ImageServer(args.root, args.latency_ms, args.port)
    for item in args.fault:
        path, _, spec = item.partition("=")
        server.add_fault(path, spec)
    server.start()
    print(f"serving {server.base}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
