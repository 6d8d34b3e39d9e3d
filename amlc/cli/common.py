"""What every subcommand shares: the work folder, running async code, printing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import aiosqlite
import click
from rich.console import Console

from ..migrate import SchemaTooNew
from ..store import StoreError, open_reader, open_writer
from ..workdir import Workdir

T = TypeVar("T")

console = Console()
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def workdir(ctx: click.Context) -> Workdir:
    return ctx.find_object(Workdir) or Workdir.resolve()


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; store problems become one clear error line instead of a traceback."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except (StoreError, SchemaTooNew) as exc:
        raise click.ClickException(str(exc)) from None


async def using_store(store: Path, work: Callable[[aiosqlite.Connection], Awaitable[T]],
                      write: bool = False) -> T:
    """Run `work` on a connection to the store (read-only unless `write`), then close it."""
    conn = await (open_writer if write else open_reader)(store)
    try:
        return await work(conn)
    finally:
        await conn.close()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
