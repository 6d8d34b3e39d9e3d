"""Plain helpers for tests that drive the store or the CLI on a temporary work folder."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from click.testing import CliRunner, Result

from amlc.cli import main
from amlc.store import fetch_all, open_writer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def amlc(workdir: Path, *args: str, ok: bool = True) -> Result:
    """Run the CLI in-process on `workdir`; by default fail the test on a non-zero exit."""
    result = CliRunner().invoke(main, ["--workdir", str(workdir), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def amlc_json(workdir: Path, *args: str) -> Any:
    return json.loads(amlc(workdir, *args, "--json").output)


def query(store: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    async def go() -> list[tuple]:
        conn = await open_writer(store)
        try:
            return [tuple(r) for r in await fetch_all(conn, sql, params)]
        finally:
            await conn.close()
    return asyncio.run(go())


def execute(store: Path, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    async def go() -> None:
        conn = await open_writer(store)
        try:
            await conn.executemany(sql, rows)
            await conn.commit()
        finally:
            await conn.close()
    asyncio.run(go())


def add_predictions(store: Path, split: str, answers: dict[int, str], source: str = "rules") -> None:
    """Store predictions for the given sample indices of a split, as a stage would: a model's
    with what it was made from (the rules answer and RapidOCR reading stored now), as
    amlc.predict records it."""
    made_from = ("CASE WHEN ? = 'rules' THEN NULL ELSE json_object('model', ?, 'ocr', 'rapidocr', "
                 "'rules_at', (SELECT r.created_at FROM predictions r WHERE r.sample_id = s.id AND r.source = 'rules'), "
                 "'ocr_at', (SELECT o.created_at FROM ocr_results o WHERE o.image_id = s.image_id "
                 "AND o.engine = 'rapidocr')) END")
    execute(store, "INSERT OR REPLACE INTO predictions(sample_id, source, prediction, created_at, detail) "
                   f"SELECT s.id, ?, ?, ?, {made_from} FROM samples s WHERE s.split = ? AND s.idx = ?",
            [(source, text, time.time(), source, source, split, idx) for idx, text in answers.items()])


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def start_run(workdir: Path, *args: str, **popen: Any) -> subprocess.Popen:
    """`amlc run` as a child process (log lines every second), for kills and signals."""
    env = {**os.environ, "AMLC_WORKDIR": str(workdir)}
    return subprocess.Popen([sys.executable, "-m", "amlc", "run", "--no-dashboard", "--log-every", "1", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def wait_for(store: Path, sql: str, at_least: int, timeout: float = 120) -> int:
    """Poll a count query on the store (read-only) until it reaches `at_least`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
        try:
            count = con.execute(sql).fetchone()[0]
        finally:
            con.close()
        if count >= at_least:
            return count
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {sql!r} >= {at_least}")
