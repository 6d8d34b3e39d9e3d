"""What the store says: status counts, one sample's journey, and scores of a labelled split.

Everything here only reads, so it runs from another terminal while `amlc run` works.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Sequence

import aiosqlite

from .export import best_answers
from .faults import failure_cause
from .metric import Report, score
from .store import StoreError, fetch_all, fetch_one, rows_as_dicts

STAGES = ("fetch", "ocr", "extract")
DISTINCT_ERRORS = 5000   # distinct failure messages read to count causes (the commonest first)


def failures_by_cause(rows: Sequence[Any], top: int) -> list[dict[str, Any]]:
    """Failure counts per stage and cause (failure_cause: numbers and paths made generic), the
    commonest first, each with one message of that cause as an example."""
    counts: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["stage"], failure_cause(row["error"] or ""))
        counts[key] += row["n"]
        example.setdefault(key, row["error"])
    return [{"stage": stage, "cause": cause, "n": n, "error": example[(stage, cause)]}
            for (stage, cause), n in counts.most_common(top)]


async def status_summary(conn: aiosqlite.Connection, top_errors: int = 5) -> dict[str, Any]:
    if await fetch_one(conn, "SELECT 1 FROM sqlite_master WHERE name = 'split_counts'") is None:
        raise StoreError("this store was last written by an older amlc and lacks the counts that "
                         "`amlc status` reads: run `amlc run` once (or `amlc ingest` of a file "
                         "already ingested, which changes nothing) to bring it up to date")
    # Counts the schema's triggers keep (migrations/0004_counts.sql): a few rows to read
    # whatever the store's size, where counting the tables took seconds at a million rows.
    splits = await fetch_all(conn, "SELECT split, samples, images, labelled FROM split_counts "
                                   "WHERE samples > 0 ORDER BY split")
    stages: dict[str, dict[str, int]] = {}
    for row in await fetch_all(conn, "SELECT stage, state, n FROM stage_counts"):
        stages.setdefault(row["stage"], {})[row["state"]] = row["n"]
    errors = await fetch_all(conn, """
        SELECT stage, last_error AS error, count(*) AS n FROM jobs
        WHERE state = 'failed' GROUP BY stage, last_error ORDER BY n DESC LIMIT ?""", (DISTINCT_ERRORS,))
    rejects = await fetch_all(conn, "SELECT split, count(*) AS n FROM rejects GROUP BY split")
    predictions = await fetch_all(conn, "SELECT source, n, answered FROM prediction_counts "
                                        "WHERE n > 0 ORDER BY source")
    # The newest result only: one row to read, and what a running daemon uses now.
    newest = await fetch_one(conn, "SELECT engine, json_extract(preprocess, '$.runtime') AS runtime "
                                   "FROM ocr_results ORDER BY rowid DESC LIMIT 1")
    return {
        "ocr": dict(newest) if newest is not None else None,
        "splits": rows_as_dicts(splits),
        "stages": {s: stages.get(s, {}) for s in [*STAGES, *sorted(set(stages) - set(STAGES))]},
        "failures": failures_by_cause(errors, top_errors),
        "rejects": {r["split"]: r["n"] for r in rejects},
        "predictions": rows_as_dicts(predictions),
    }


async def sample_journey(conn: aiosqlite.Connection, split: str, idx: int) -> dict[str, Any] | None:
    sample = await fetch_one(conn, "SELECT * FROM samples WHERE split = ? AND idx = ?", (split, idx))
    if sample is None:
        return None
    image = await fetch_one(conn, "SELECT * FROM images WHERE id = ?", (sample["image_id"],))
    jobs = await fetch_all(conn, """
        SELECT stage, state, attempts, last_error, lease_until, updated_at FROM jobs
        WHERE (item_id = :image AND stage IN ('fetch', 'ocr'))
           OR (item_id = :sample AND stage NOT IN ('fetch', 'ocr'))
        ORDER BY CASE stage WHEN 'fetch' THEN 0 WHEN 'ocr' THEN 1 WHEN 'extract' THEN 2 ELSE 3 END,
                 stage""", {"image": sample["image_id"], "sample": sample["id"]})
    ocr = await fetch_all(conn, "SELECT engine, text, preprocess, seconds FROM ocr_results "
                                "WHERE image_id = ?", (sample["image_id"],))
    predictions = await fetch_all(conn, "SELECT source, run_id, prediction, confidence, created_at "
                                        "FROM predictions WHERE sample_id = ?", (sample["id"],))
    return {
        "sample": dict(zip(sample.keys(), tuple(sample))),
        "image": dict(zip(image.keys(), tuple(image))) if image else None,
        "jobs": rows_as_dicts(jobs),
        "ocr": [{**d, "preprocess": json.loads(d["preprocess"])} for d in rows_as_dicts(ocr)],
        "predictions": rows_as_dicts(predictions),
    }


async def evaluate_split(conn: aiosqlite.Connection, split: str,
                         sources: Sequence[str] = (), only: bool = False) -> tuple[Report, int]:
    """Score the split's best answers against its labels as the file wrote them (an empty
    label is an empty truth), so the strict F1 is the exact comparison with '21.0 centimetre';
    returns the report and how many samples were skipped for having no usable label."""
    answers = await best_answers(conn, split, sources, only)
    raw = {r["id"]: r["raw_label"] for r in await fetch_all(
        conn, "SELECT id, raw_label FROM samples WHERE split = ?", (split,))}
    labelled = [a for a in answers if a.has_truth]
    report = score((a.entity, (raw[a.sample_id] or "").strip(), a.prediction) for a in labelled)
    return report, len(answers) - len(labelled)
