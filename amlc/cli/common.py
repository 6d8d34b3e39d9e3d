"""What every subcommand shares: the work folder, running async code, printing."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Awaitable, Callable, TypeVar

import click
from rich.console import Console

from ..migrate import SchemaTooNew
from ..store import StoreError
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


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
