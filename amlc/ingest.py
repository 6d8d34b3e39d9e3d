"""Ingest the official CSV files (or a labelled validation file) into the store.

Idempotent: samples are unique by (split, index) and images by link, so the same file twice
changes nothing. Bad rows are reported with their line number, stored in `rejects`, and never
stop the rest.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import aiosqlite

from .store import finish_run, start_run
from .units import ENTITY_UNITS, AnswerError, UnitNotAllowed, parse_label

REQUIRED = ("image_link", "group_id", "entity_name")
BATCH = 5000

INSERT_IMAGE = "INSERT OR IGNORE INTO images(link) VALUES (?)"
INSERT_SAMPLE = """
INSERT OR IGNORE INTO samples(split, idx, image_id, group_id, entity, label, raw_label, label_error)
VALUES (?, ?, (SELECT id FROM images WHERE link = ?), ?, ?, ?, ?, ?)
"""
INSERT_REJECT = "INSERT OR REPLACE INTO rejects(split, source, line, reason, raw) VALUES (?, ?, ?, ?, ?)"


class IngestError(ValueError):
    """The file as a whole cannot be ingested (missing columns, unreadable)."""


@dataclass(frozen=True)
class Sample:
    idx: int
    link: str
    group_id: str
    entity: str
    label: str | None
    raw_label: str | None
    label_error: str | None


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: str


@dataclass
class IngestReport:
    file: str
    split: str
    rows: int = 0
    inserted: int = 0
    already_present: int = 0
    rejected: int = 0
    unusable_labels: int = 0
    seconds: float = 0.0
    first_rejects: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_header(header: list[str] | None, path: Path) -> None:
    if not header:
        raise IngestError(f"{path}: empty file, expected a header with {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise IngestError(f"{path}: header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")


def _label(raw: str | None, entity: str) -> tuple[str | None, str | None]:
    """(canonical label, why unusable); a label that is not '<number> <unit>' at all raises."""
    if raw is None or raw.strip() == "":
        return None, None
    try:
        return str(parse_label(raw, entity)), None
    except UnitNotAllowed as exc:
        return None, str(exc)


def _sample(record: dict[str, str], row_number: int, has_index: bool) -> Sample:
    link = (record.get("image_link") or "").strip()
    entity = (record.get("entity_name") or "").strip()
    if not link:
        raise ValueError("empty image_link")
    if entity not in ENTITY_UNITS:
        raise ValueError(f"unknown entity {entity!r}")
    idx = row_number
    if has_index:
        try:
            idx = int(record.get("index") or "")
        except ValueError:
            raise ValueError(f"index {record.get('index')!r} is not an integer") from None
    raw_label = record.get("entity_value")
    try:
        label, label_error = _label(raw_label, entity)
    except AnswerError as exc:
        raise ValueError(f"malformed label: {exc}") from None
    group = (record.get("group_id") or "").strip()
    return Sample(idx, link, group, entity, label, raw_label, label_error)


def read_rows(path: Path) -> Iterator[Sample | Reject]:
    """Samples and rejects in file order. Train files have no index: the data row number
    (0 for the first row after the header) stands in for it."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        _check_header(header, path)
        assert header is not None
        has_index, seen = "index" in header, {}
        line = reader.line_num
        for row_number, fields in enumerate(reader):
            start, line = line + 1, reader.line_num
            yield _parse_row(header, fields, start, row_number, has_index, seen)


def _parse_row(header: list[str], fields: list[str], line: int, row_number: int,
               has_index: bool, seen: dict[int, int]) -> Sample | Reject:
    raw = ",".join(fields)
    if len(fields) != len(header):
        return Reject(line, f"expected {len(header)} fields, got {len(fields)}", raw)
    try:
        sample = _sample(dict(zip(header, fields)), row_number, has_index)
    except ValueError as exc:
        return Reject(line, str(exc), raw)
    if sample.idx in seen:
        return Reject(line, f"duplicate index {sample.idx} (first on line {seen[sample.idx]})", raw)
    seen[sample.idx] = line
    return sample


async def _write_batch(conn: aiosqlite.Connection, split: str, source: str,
                       samples: list[Sample], rejects: list[Reject]) -> int:
    await conn.executemany(INSERT_IMAGE, [(s.link,) for s in samples])
    before = conn.total_changes
    await conn.executemany(INSERT_SAMPLE, [
        (split, s.idx, s.link, s.group_id, s.entity, s.label, s.raw_label, s.label_error)
        for s in samples])
    inserted = conn.total_changes - before
    await conn.executemany(INSERT_REJECT, [(split, source, r.line, r.reason, r.raw) for r in rejects])
    return inserted


async def ingest(conn: aiosqlite.Connection, path: Path, split: str) -> IngestReport:
    """Ingest one CSV into `split`; the whole file is one transaction."""
    report = IngestReport(str(path), split)
    started = time.perf_counter()
    run_id = await start_run(conn, "ingest", json.dumps({"file": str(path), "split": split}))
    samples: list[Sample] = []
    rejects: list[Reject] = []
    for item in read_rows(path):
        report.rows += 1
        if isinstance(item, Reject):
            rejects.append(item)
            _note_reject(report, item)
        else:
            samples.append(item)
            report.unusable_labels += item.label_error is not None
        if len(samples) + len(rejects) >= BATCH:
            report.inserted += await _write_batch(conn, split, path.name, samples, rejects)
            samples, rejects = [], []
    report.inserted += await _write_batch(conn, split, path.name, samples, rejects)
    await conn.commit()
    report.already_present = report.rows - report.rejected - report.inserted
    report.seconds = time.perf_counter() - started
    await finish_run(conn, run_id, json.dumps(report.as_dict()))
    return report


def _note_reject(report: IngestReport, reject: Reject) -> None:
    report.rejected += 1
    if len(report.first_rejects) < 20:
        report.first_rejects.append(f"line {reject.line}: {reject.reason}")
