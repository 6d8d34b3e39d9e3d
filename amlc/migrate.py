"""Numbered SQL migrations, applied in order when the store opens.

Each file `NNNN_name.sql` runs inside one transaction together with its record in
`schema_migrations`, so a crash mid-migration leaves the store at the previous version.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

_FILE_RE = re.compile(r"^(\d{4})_(\w+)\.sql$")


class SchemaTooNew(RuntimeError):
    """The store was written by a newer amlc than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations_dir() -> Path:
    """The top-level migrations/ of a source checkout, else the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no migrations folder beside the amlc package")


def known_migrations(folder: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((folder or migrations_dir()).glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


async def applied_versions(conn: aiosqlite.Connection) -> set[int]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    await conn.commit()
    async with conn.execute("SELECT version FROM schema_migrations") as cursor:
        return {row[0] async for row in cursor}


def refuse_newer(versions: set[int], known: list[Migration]) -> None:
    """Raise SchemaTooNew when the store has a migration this amlc does not know."""
    newest_known = max((m.version for m in known), default=0)
    if versions and max(versions) > newest_known:
        raise SchemaTooNew(
            f"this store was written by a newer amlc (schema {max(versions)} > {newest_known}): "
            "upgrade amlc to use it (nothing in it was changed)")


async def check_version(conn: aiosqlite.Connection) -> None:
    """For read-only connections, which cannot migrate: refuse a store from a newer amlc."""
    async with conn.execute("SELECT version FROM schema_migrations") as cursor:
        refuse_newer({row[0] async for row in cursor}, known_migrations())


async def migrate(conn: aiosqlite.Connection, folder: Path | None = None) -> list[Migration]:
    """Apply every pending migration in order; returns those applied."""
    known = known_migrations(folder)
    done = await applied_versions(conn)
    refuse_newer(done, known)
    applied = []
    for migration in known:
        if migration.version in done:
            continue
        record = (
            "INSERT INTO schema_migrations(version, name, applied_at) "
            f"VALUES ({migration.version}, '{migration.name}', {time.time()});"
        )
        script = migration.path.read_text()
        try:
            # executescript commits what is pending first; BEGIN..COMMIT makes the file and its
            # record one transaction.
            await conn.executescript(f"BEGIN;\n{script}\n{record}\nCOMMIT;")
        except Exception:
            await conn.rollback()
            raise
        applied.append(migration)
    return applied
