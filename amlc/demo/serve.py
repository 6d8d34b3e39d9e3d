"""A local image server for the demo: the rendered files under /images/I/<name>, on 127.0.0.1.

It runs its own event loop in a daemon thread, so it serves while the pipeline (its own loop)
downloads, and keeps serving for `--keep-server` while the main thread waits for Ctrl-C.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

URL_PREFIX = "/images/I/"


def make_app(folder: Path) -> web.Application:
    """Static files of `folder` under URL_PREFIX (aiohttp refuses paths outside the folder)."""
    app = web.Application()
    app.router.add_static(URL_PREFIX, folder, show_index=True)
    return app


class ImageServer:
    """`with ImageServer(folder) as server: server.url` (ephemeral port on 127.0.0.1)."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", prefer_port: int = 0) -> None:
        self.folder = folder
        self.host = host
        self.prefer_port = prefer_port  # a resumed demo asks for its old port: its links stay valid
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-image-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{URL_PREFIX}"

    def link(self, name: str) -> str:
        return self.url + name

    async def _start(self) -> int:
        self._runner = web.AppRunner(make_app(self.folder), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.prefer_port)
        try:
            await site.start()
        except OSError:  # taken: any free port (the caller relinks)
            site = web.TCPSite(self._runner, self.host, 0)
            await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the port chosen

    def __enter__(self) -> "ImageServer":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
