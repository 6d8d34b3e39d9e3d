"""What `amlc run` settles in the store before its first claim.

The run lock is held, so no other process works on this store: every lease left in it belongs
to a dead process, image paths written by older versions can be made relative to the work
folder (so the folder can move), and work done with another OCR engine is queued again.
"""

from __future__ import annotations

import json

import aiosqlite

from .jobs import release_dead
from .store import fetch_all
from .workdir import Workdir, moved_image_path

# Images read by another engine are read again by this one (their extractions follow through
# the ocred_needs_extract trigger). Failed reads stay failed: --retry-failed re-opens them.
REREAD_SQL = """
UPDATE jobs SET state = 'pending', attempts = 0, last_error = NULL, not_before = NULL
WHERE stage = 'ocr' AND state = 'done' AND NOT EXISTS (
    SELECT 1 FROM ocr_results r WHERE r.image_id = jobs.item_id AND r.engine = :engine)
"""

# Samples whose rules answer came from another ranker (an upgrade shipped a new one).
RERANK_SQL = """
UPDATE jobs SET state = 'pending', attempts = 0, last_error = NULL, not_before = NULL
WHERE stage = 'extract' AND state IN ('done', 'failed') AND item_id IN (
    SELECT sample_id FROM predictions
    WHERE source = 'rules' AND json_extract(detail, '$.ranker') IS NOT :ranker)
"""

# Samples whose rules answer came from another engine's text, when this engine's text exists.
REEXTRACT_SQL = """
UPDATE jobs SET state = 'pending', attempts = 0, last_error = NULL, not_before = NULL
WHERE stage = 'extract' AND state IN ('done', 'failed') AND item_id IN (
    SELECT p.sample_id FROM predictions p
    JOIN samples s ON s.id = p.sample_id
    JOIN ocr_results r ON r.image_id = s.image_id AND r.engine = :engine
    WHERE p.source = 'rules' AND json_extract(p.detail, '$.ocr') IS NOT :engine)
"""


async def settle_store(conn: aiosqlite.Connection, workdir: Workdir, max_attempts: int,
                       ocr_engine: str | None, ranker: str | None = None) -> dict[str, int]:
    """Bring the store in line with this run; returns what changed, by kind. `ranker` (the
    extract stage's digest, when it runs) answers again what another ranker answered; a sample
    answered again has its model answers made again too (migrations/0005)."""
    changed = {"released": await release_dead(conn, max_attempts, everything=True),
               "paths_made_relative": await relative_paths(conn, workdir)}
    if ocr_engine is not None:
        changed["reread"] = (await conn.execute(REREAD_SQL, {"engine": ocr_engine})).rowcount
        changed["reextract"] = (await conn.execute(REEXTRACT_SQL, {"engine": ocr_engine})).rowcount
    if ranker is not None:
        changed["reranked"] = (await conn.execute(RERANK_SQL, {"ranker": ranker})).rowcount
    await conn.commit()
    return changed


async def relative_paths(conn: aiosqlite.Connection, workdir: Workdir) -> int:
    """Rewrite absolute image paths (stores written before paths were relative)."""
    rows = await fetch_all(conn, "SELECT id, path FROM images WHERE path LIKE '/%'")
    updates = [(moved_image_path(r["path"]), r["id"]) for r in rows]
    updates = [(path, i) for path, i in updates if not path.startswith("/")]
    await conn.executemany("UPDATE images SET path = ? WHERE id = ?", updates)
    await conn.commit()
    return len(updates)


def rules_detail(ocr_engine: str, ranker: str) -> str:
    """The `detail` of a rules prediction: whose OCR text and which ranker it came from."""
    return json.dumps({"ocr": ocr_engine, "ranker": ranker})
