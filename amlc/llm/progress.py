"""Progress of long LLM work (training, export, scoring rows): a rich bar with rate and ETA on a
terminal, and a plain line every few seconds elsewhere (a log file, CI), on stderr.

    with Progress("score val", total=len(rows), unit="rows") as progress:
        for row in rows:
            ...
            progress.advance(loss=0.41)   # extra fields are shown after the counts

Used without `with`, `start()` begins it and reaching the total ends it.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.progress import Progress as RichProgress

from .quiet import own

PLAIN_INTERVAL = 5.0  # seconds between plain lines


def _fields(info: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts done out of a total; `live` (default: stderr is a terminal) picks the rich bar."""

    def __init__(self, description: str, total: int | None, unit: str = "rows", live: bool | None = None,
                 interval: float = PLAIN_INTERVAL, console: Console | None = None) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.console = console or Console(file=own(2))  # the user's, even while libraries log
        self.live = self.console.is_terminal if live is None else live
        self.interval = interval
        self.done = 0
        self.info: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self._bar: RichProgress | None = None
        self.closed = False

    def __enter__(self) -> "Progress":
        return self.start()

    def start(self) -> "Progress":
        self.started = self.last_line = time.monotonic()
        if self.live:
            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, rate="", info="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The final state (once; `advance` calls it when the total is reached)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
        else:
            self._line()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> float | None:
        if not self.total or not self.done:
            return None
        return (self.total - self.done) / self.rate

    def advance(self, n: int = 1, **info: Any) -> None:
        self.done += n
        self.info.update(info)
        if self.total and self.done >= self.total:
            self.close()
        elif self._bar is not None:
            self._refresh()
        elif time.monotonic() - self.last_line >= self.interval:
            self._line()

    def _rate_text(self) -> str:
        rate = self.rate
        return f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit.rstrip('s')}" if rate else ""

    def _refresh(self) -> None:
        assert self._bar is not None
        self._bar.update(self._task, completed=self.done, rate=self._rate_text(), info=_fields(self.info))

    def _line(self) -> None:
        self.last_line = time.monotonic()
        eta = self.eta()
        total = f"/{self.total}" if self.total else ""
        parts = [f"{self.description}: {self.done}{total} {self.unit}", self._rate_text(),
                 f"elapsed {_duration(self.last_line - self.started)}"]
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        if self.info:
            parts.append(_fields(self.info))
        print(", ".join(p for p in parts if p), file=own(2), flush=True)
