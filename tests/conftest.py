"""Shared pytest fixtures. Keep each fixture short and say what it gives."""

from __future__ import annotations

from typing import Iterator

import pytest

from http_server import ImageServer


@pytest.fixture(scope="session")
def _image_server_session() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture
def image_server(_image_server_session: ImageServer) -> Iterator[ImageServer]:
    """The local image server (tests/http_server.py) with no faults and zeroed hit counts.

    `.url(path)`, `.base`, `.hits[path]`, `.add_fault(path_or_prefix/, "500x2" | Fault(...))`,
    `.add_bytes(path, data, content_type)`; real test images under /images/I/<id>.jpg.
    One server per session; `.stop()` is called at session end.
    """
    _image_server_session.reset()
    yield _image_server_session
    _image_server_session.reset()
