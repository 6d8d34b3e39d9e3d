"""Per-stage work items: pending -> leased -> done | failed, with attempts and leases.

A claim is one UPDATE ... RETURNING, so two claimers can never take the same item. A lease
that outlived its process (kill -9) goes back to pending on the next start. A claim counts a
try at once; the try is given back when the item never started (a kill or a clean stop while
it was queued), and kept when its work had begun (`started_at`): an input that kills the
process spends its budget across restarts and ends `failed` instead of crashing every run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import aiosqlite

from .store import id_list

CLAIM_SQL = """
UPDATE jobs SET state = 'leased', attempts = attempts + 1, started_at = NULL,
                lease_until = :now + :lease, updated_at = :now
WHERE stage = :stage AND item_id IN (
    SELECT item_id FROM jobs
    WHERE stage = :stage AND state = 'pending' AND coalesce(not_before, 0) <= :now
    ORDER BY item_id LIMIT :n)
RETURNING item_id, attempts
"""


@dataclass(frozen=True, order=True)
class Claimed:
    item_id: int
    attempts: int  # including this one


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4       # tries per item before it is marked failed
    backoff_base: float = 2.0   # seconds before the first retry; doubles each attempt
    backoff_max: float = 300.0  # ceiling on one wait

    def delay(self, attempts: int) -> float:
        """Full jitter: spreads retries of a failing host instead of hammering it in step."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1)))


async def claim(conn: aiosqlite.Connection, stage: str, n: int,
                lease_seconds: float = 600.0) -> list[Claimed]:
    params = {"stage": stage, "n": n, "now": time.time(), "lease": lease_seconds}
    async with conn.execute(CLAIM_SQL, params) as cursor:
        rows = await cursor.fetchall()
    await conn.commit()
    return sorted(Claimed(row[0], row[1]) for row in rows)


def done_statement(stage: str, item_id: int) -> tuple[str, tuple]:
    return ("UPDATE jobs SET state = 'done', last_error = NULL, lease_until = NULL, "
            "updated_at = ? WHERE stage = ? AND item_id = ?", (time.time(), stage, item_id))


def failure_statement(stage: str, item: Claimed, error: str, retryable: bool,
                      policy: RetryPolicy) -> tuple[str, tuple]:
    """Back to pending after a backoff while the retry budget lasts, else failed."""
    now = time.time()
    if retryable and item.attempts < policy.max_attempts:
        return ("UPDATE jobs SET state = 'pending', last_error = ?, lease_until = NULL, "
                "not_before = ?, updated_at = ? WHERE stage = ? AND item_id = ?",
                (error, now + policy.delay(item.attempts), now, stage, item.item_id))
    return ("UPDATE jobs SET state = 'failed', last_error = ?, lease_until = NULL, "
            "updated_at = ? WHERE stage = ? AND item_id = ?",
            (error, now, stage, item.item_id))


DIED = "process died while handling it"

RELEASE_DEAD_SQL = f"""
UPDATE jobs SET
    state = CASE WHEN started_at IS NOT NULL AND attempts >= :max THEN 'failed' ELSE 'pending' END,
    attempts = attempts - (started_at IS NULL),
    last_error = CASE WHEN started_at IS NOT NULL THEN '{DIED}' ELSE last_error END,
    lease_until = NULL, started_at = NULL, updated_at = :now
WHERE state = 'leased' AND (:everything OR lease_until < :now)
"""


async def mark_started(conn: aiosqlite.Connection, stage: str, batch: Sequence[tuple[Claimed, Any]]) -> None:
    """Record (and commit) that work on these leased items begins now."""
    await conn.execute(f"UPDATE jobs SET started_at = ? WHERE stage = ? AND item_id IN "
                       f"({id_list(item.item_id for item, _ in batch)}) "
                       "AND state = 'leased'", (time.time(), stage))
    await conn.commit()


async def release_dead(conn: aiosqlite.Connection, max_attempts: int, everything: bool = False) -> int:
    """Return the leases of dead processes: the expired ones, or all (at start, when the run
    lock says no worker is alive). Items whose work had begun keep the try they spent, and
    fail once their budget is gone."""
    cursor = await conn.execute(RELEASE_DEAD_SQL, {"max": max_attempts, "now": time.time(),
                                                   "everything": everything})
    await conn.commit()
    return cursor.rowcount


async def retry_failed(conn: aiosqlite.Connection, stage: str | None = None) -> int:
    """Give failed items a fresh retry budget (after the cause was fixed)."""
    cursor = await conn.execute(
        "UPDATE jobs SET state = 'pending', attempts = 0, not_before = NULL, started_at = NULL "
        "WHERE state = 'failed' AND (? IS NULL OR stage = ?)", (stage, stage))
    await conn.commit()
    return cursor.rowcount
