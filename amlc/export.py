"""Export a split's best answers so far as a submission, checked before it is written.

The answers come from one source: the one with the best F1 in the newest `amlc eval` that
scored each source (the rules unless a model beat them), or the one the user names. Where a
model is used, its blank never replaces a rules answer unless asked. Works while `amlc run`
writes to the same store: it reads through a WAL snapshot.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import aiosqlite

from .store import fetch_all
from .units import prediction_error

RULES = "rules"

# A model's answer is current while the store still holds the OCR reading and the rules answer
# it was made from (amlc.predict records when each was stored; none is none): one made from an
# older reading waits for the predict stage to answer again and is never exported or scored
# meanwhile. Times match to a millisecond (JSON may round them), far below any re-reading's gap.
RULES_AT = "(SELECT r.created_at FROM predictions r WHERE r.sample_id = s.id AND r.source = 'rules')"
OCR_AT = ("(SELECT o.created_at FROM ocr_results o WHERE o.image_id = s.image_id "
          "AND o.engine = json_extract(q.detail, '$.ocr'))")


def _same_time(recorded: str, stored: str) -> str:
    return f"({recorded} IS NULL AND {stored} IS NULL OR abs({recorded} - {stored}) < 1e-3)"


RULES_AT_RECORDED = "json_extract(q.detail, '$.rules_at')"
OCR_AT_RECORDED = "json_extract(q.detail, '$.ocr_at')"
CURRENT_SQL = (f"(q.source = 'rules' OR ({_same_time(RULES_AT_RECORDED, RULES_AT)} "
               f"AND {_same_time(OCR_AT_RECORDED, OCR_AT)}))")

# The best answer per sample: the first source in the caller's preference list, else any
# model's newest answer, else the rules' answer; with :skip_blanks, any answer before a blank.
BEST_SQL = f"""
SELECT s.id, s.idx, s.entity, s.label,
       s.raw_label IS NOT NULL AND s.label_error IS NULL AS has_truth, p.prediction, p.source
FROM samples s
LEFT JOIN predictions p ON p.rowid = (
    SELECT q.rowid FROM predictions q
    WHERE q.sample_id = s.id AND (:only = 0 OR instr(:sources, '|' || q.source || '|') > 0)
      AND {CURRENT_SQL}
    ORDER BY :skip_blanks AND q.prediction = '',
             instr(:sources, '|' || q.source || '|') = 0,
             instr(:sources, '|' || q.source || '|'),
             q.source = 'rules', q.created_at DESC
    LIMIT 1)
WHERE s.split = :split ORDER BY s.idx
"""

SOURCES_SQL = """
SELECT DISTINCT p.source FROM predictions p JOIN samples s ON s.id = p.sample_id
WHERE s.split = ? ORDER BY p.source
"""

# The newest evaluation that scored every source alone (recorded by `amlc eval`).
SCORES_SQL = """
SELECT id, json_extract(config, '$.split') AS split, json_extract(metrics, '$.by_source') AS scores
FROM runs WHERE kind = 'eval' AND status = 'done' AND json_extract(metrics, '$.by_source') IS NOT NULL
ORDER BY id DESC LIMIT 1
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
    source: str | None = None  # whose answer it is; None where no source answered


@dataclass(frozen=True)
class Choice:
    source: str  # whose answers the export uses
    why: str     # in words, for the user


async def best_answers(conn: aiosqlite.Connection, split: str, sources: Sequence[str] = (),
                       only: bool = False, skip_blanks: bool = False) -> list[Answered]:
    """Each sample of the split in index order with its preferred prediction.

    `sources` orders the preferred prediction sources; with `only`, other sources are ignored;
    with `skip_blanks`, a blank gives way to the next source's answer.
    """
    params = {"split": split, "sources": "|" + "|".join(sources) + "|", "only": int(only),
              "skip_blanks": int(skip_blanks)}
    rows = await fetch_all(conn, BEST_SQL, params)
    return [Answered(r["id"], r["idx"], r["entity"], r["label"], bool(r["has_truth"]),
                     r["prediction"] or "", r["source"]) for r in rows]


async def split_sources(conn: aiosqlite.Connection, split: str) -> list[str]:
    """The sources (rules, models) with predictions for the split."""
    return [r["source"] for r in await fetch_all(conn, SOURCES_SQL, (split,))]


async def choose_source(conn: aiosqlite.Connection, split: str) -> Choice:
    """The source with the best recorded F1 among those that answered `split`: the rules
    unless a model beat them on rows it never learned from."""
    recorded = await fetch_all(conn, SCORES_SQL)
    if not recorded:
        return Choice(RULES, "no F1 per source is recorded yet (`amlc eval --split <labelled split>` "
                             "records one): the rules by default")
    run, scores = recorded[0], json.loads(recorded[0]["scores"])
    learned = sorted(s for s, v in scores.items() if v.get("learned_rows"))
    f1 = {s: v["f1"] for s, v in scores.items() if s not in learned}
    answered = set(await split_sources(conn, split))
    where = f"on split {run['split']!r} (amlc eval, run {run['id']})"
    if learned:
        where += f"; not counted: {', '.join(learned)}, trained or fitted on rows of that split"
    rules = f1.get(RULES, 0.0)
    models = sorted((v, s) for s, v in f1.items() if s != RULES and s in answered)
    if models and models[-1][0] > rules:
        return Choice(models[-1][1], f"F1 {models[-1][0]:.4f} beat the rules' {rules:.4f} {where}")
    others = f", best model {models[-1][1]} {models[-1][0]:.4f}" if models else ", no model answered it"
    return Choice(RULES, f"the rules' F1 {rules:.4f} {where}{others}")


async def rows_learned(conn: aiosqlite.Connection, source: str, split: str, store: Path) -> int:
    """How many of `split`'s labelled samples the model behind `source` (or rules+<model>) was
    trained or fitted on: those of a split or file it learned from that fall in the training
    half of its split by image (amlc.llm.origin). 0 for the rules and for models whose origin
    nobody recorded."""
    from .extract.data import in_validation

    model = source.removeprefix("rules+")
    found = await fetch_all(conn, "SELECT json_extract(config, '$.trained_on') AS origin FROM runs "
                                  "WHERE kind = 'model' AND json_extract(config, '$.source') = ? "
                                  "ORDER BY id DESC LIMIT 1", (model,))
    origin = json.loads(found[0]["origin"]) if found and found[0]["origin"] else None
    if origin is None or not await _learned_from_split(conn, origin, split, store):
        return 0
    links = await fetch_all(conn, "SELECT i.link FROM samples s JOIN images i ON i.id = s.image_id "
                                  "WHERE s.split = ? AND s.label IS NOT NULL", (split,))
    return sum(not in_validation({"image_link": r["link"]}, origin["seed"]) for r in links)


async def _learned_from_split(conn: aiosqlite.Connection, origin: dict, split: str, store: Path) -> bool:
    """The split is one the model's rows came from: named in this store, or ingested from a file
    with the same content as one of its training files."""
    if origin.get("store") == str(Path(store).resolve()) and split in origin.get("splits", ()):
        return True
    files = {f["sha256"] for f in origin.get("files", ())}
    ingested = await fetch_all(conn, "SELECT json_extract(metrics, '$.sha256') AS sha FROM runs "
                                     "WHERE kind = 'ingest' AND json_extract(config, '$.split') = ?", (split,))
    return any(r["sha"] in files for r in ingested)


async def export_answers(conn: aiosqlite.Connection, split: str, source: str,
                         keep_model_blanks: bool = False) -> list[Answered]:
    """`source`'s answers; where a model has no answer or (unless `keep_model_blanks`) a blank
    one, the rules' answer."""
    sources = (source,) if source == RULES else (source, RULES)
    return await best_answers(conn, split, sources, only=True, skip_blanks=not keep_model_blanks)


def provenance(answers: Sequence[Answered]) -> str:
    """How many answers each source gave, and how many stayed blank, in words."""
    counts = Counter(a.source for a in answers if a.prediction)
    parts = [f"{n} from {source}" for source, n in counts.most_common()]
    return ", ".join([*parts, f"{sum(not a.prediction for a in answers)} blank"])


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


def write_atomically(path: Path, data: str | bytes) -> None:
    """A reader sees the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        text = {"mode": "w", "newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, **({"mode": "wb"} if isinstance(data, bytes) else text)) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
