"""Export a split's best answers so far as a submission, checked before it is written.

Works while `amlc run` writes to the same store: it reads through a WAL snapshot.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import aiosqlite

from .store import fetch_all
from .units import prediction_error

# The best answer per sample: the first source in the caller's preference list, else any
# model's newest answer, else the rules' answer.
BEST_SQL = """
SELECT s.id, s.idx, s.entity, s.label,
       s.raw_label IS NOT NULL AND s.label_error IS NULL AS has_truth,
       (SELECT p.prediction FROM predictions p
        WHERE p.sample_id = s.id AND (:only = 0 OR instr(:sources, '|' || p.source || '|') > 0)
        ORDER BY instr(:sources, '|' || p.source || '|') = 0,
                 instr(:sources, '|' || p.source || '|'),
                 p.source = 'rules', p.created_at DESC
        LIMIT 1) AS prediction
FROM samples s WHERE s.split = :split ORDER BY s.idx
"""


class ExportError(ValueError):
    """The submission would break the format; nothing was written."""


@dataclass(frozen=True)
class Answered:
    sample_id: int
    idx: int
    entity: str
    label: str | None
    has_truth: bool  # labelled with a usable label ('' truth included)
    prediction: str  # '' where no source answered


async def best_answers(conn: aiosqlite.Connection, split: str,
                       sources: Sequence[str] = (), only: bool = False) -> list[Answered]:
    """Each sample of the split in index order with its preferred prediction.

    `sources` orders the preferred prediction sources; with `only`, other sources are ignored.
    """
    params = {"split": split, "sources": "|" + "|".join(sources) + "|", "only": int(only)}
    rows = await fetch_all(conn, BEST_SQL, params)
    return [Answered(r["id"], r["idx"], r["entity"], r["label"], bool(r["has_truth"]),
                     r["prediction"] or "") for r in rows]


def render_submission(answers: Sequence[Answered]) -> str:
    problems = [f"index {a.idx} ({a.prediction!r}): {why}" for a in answers
                if (why := prediction_error(a.prediction, a.entity))]
    if problems:
        raise ExportError(f"{len(problems)} invalid prediction(s), first: " + "; ".join(problems[:5]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "prediction"])
    writer.writerows([a.idx, a.prediction] for a in answers)
    return buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """A reader sees the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
