"""The store: one SQLite file in WAL mode that holds every row's state, text and answers.

One writer connection (the daemon batches its writes through it, see writer.py) and separate
read-only connections for status queries, so readers never block the writer.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import aiosqlite

from .migrate import check_version, migrate


def id_list(ids: Iterable[int]) -> str:
    """Row ids as an SQL list to inline: each is made an int first, so nothing else can reach SQL."""
    return ",".join(str(int(i)) for i in ids)


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says what to do."""


async def _configure(conn: aiosqlite.Connection) -> None:
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA foreign_keys = ON")


async def open_writer(path: Path) -> aiosqlite.Connection:
    """The writer connection, with the schema migrated to this version of amlc."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path)
    try:
        await _configure(conn)
        await conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await migrate(conn)
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StoreError(f"{path} is not a usable amlc store ({exc}); move it aside "
                         "or restore it from a backup") from exc
    except BaseException:
        await conn.close()
        raise
    return conn


def read_only_uri(path: str | Path) -> str:
    """The SQLite URI that opens `path` read-only. The path is percent-encoded, so a folder
    named with '?' or '#' cannot end the file name early and open another file read-write."""
    return Path(path).resolve().as_uri() + "?mode=ro"


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection: it cannot change the store, whatever SQL it runs."""
    if not path.exists():
        raise StoreError(f"no store at {path}: run `amlc ingest` first (or pass --workdir)")
    conn = await aiosqlite.connect(read_only_uri(path), uri=True)
    try:
        await _configure(conn)
        await check_version(conn)
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StoreError(f"{path} is not a readable amlc store ({exc})") from exc
    except BaseException:
        await conn.close()
        raise
    return conn


async def fetch_all(conn: aiosqlite.Connection, sql: str,
                    params: Sequence[Any] | dict[str, Any] = ()) -> list[aiosqlite.Row]:
    async with conn.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def fetch_one(conn: aiosqlite.Connection, sql: str,
                    params: Sequence[Any] | dict[str, Any] = ()) -> aiosqlite.Row | None:
    async with conn.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def start_run(conn: aiosqlite.Connection, kind: str, config: str = "{}") -> int:
    cursor = await conn.execute(
        "INSERT INTO runs(kind, config, started_at) VALUES (?, ?, ?)", (kind, config, time.time()))
    await conn.commit()
    return int(cursor.lastrowid or 0)


async def finish_run(conn: aiosqlite.Connection, run_id: int, metrics: str,
                     status: str = "done") -> None:
    await conn.execute(
        "UPDATE runs SET metrics = ?, status = ?, finished_at = ? WHERE id = ?",
        (metrics, status, time.time(), run_id))
    await conn.commit()


def rows_as_dicts(rows: Iterable[aiosqlite.Row]) -> list[dict[str, Any]]:
    return [dict(zip(row.keys(), tuple(row))) for row in rows]
