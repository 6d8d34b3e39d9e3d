"""Ingest the official CSV files (or a labelled validation file) into the store.

Idempotent: samples are unique by (split, index) and images by link, so the same file twice
changes nothing but labels: a labelled file ingested again updates the labels that changed and
counts them. Bad rows (an unknown entity, a stray quote, a field over the csv module's limit, a
link that is not http(s) without --local-images) are reported with their line number, stored in
`rejects`, and never stop the rest. A file that is not UTF-8 is refused whole, naming the offset
of its first bad byte (checked before anything is written). Rows are committed every BATCH, so
a daemon writing beside a long ingest waits for one batch, not for the whole file; an ingest
stopped part-way is completed by running it again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import aiosqlite

from .localfiles import link_problem
from .store import fetch_all, finish_run, id_list, start_run
from .units import ENTITY_UNITS, AnswerError, UnitNotAllowed, parse_label

REQUIRED = ("image_link", "group_id", "entity_name")
BATCH = 5000
MAX_RECORD_LINES = 8  # a quoted field may hold line breaks; one still open after this many is a stray quote
RAW_LIMIT = 1000      # characters of a rejected row kept in `rejects.raw`
STRAY_QUOTE = 'stray quote: a field opens with " and no closing quote ends it on this line'

INSERT_IMAGE = "INSERT OR IGNORE INTO images(link) VALUES (?)"
INSERT_SAMPLE = """
INSERT OR IGNORE INTO samples(split, idx, image_id, group_id, entity, label, raw_label, label_error)
VALUES (?, ?, (SELECT id FROM images WHERE link = ?), ?, ?, ?, ?, ?)
"""
INSERT_REJECT = "INSERT OR REPLACE INTO rejects(split, source, line, reason, raw) VALUES (?, ?, ?, ?, ?)"
# The file's rejects are its latest ingest's: a line fixed since is no longer listed.
CLEAR_REJECTS = "DELETE FROM rejects WHERE split = ? AND source = ?"
# A batch's samples as stored, so that only labels that changed are updated (nothing else ever is).
STORED_LABELS = """
SELECT s.idx, s.entity, i.link, s.label, s.raw_label, s.label_error
FROM samples s JOIN images i ON i.id = s.image_id WHERE s.split = ? AND s.idx IN ({ids})
"""
UPDATE_LABEL = "UPDATE samples SET label = ?, raw_label = ?, label_error = ? WHERE split = ? AND idx = ?"


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
    labels_changed: int = 0
    rejected: int = 0
    unusable_labels: int = 0
    seconds: float = 0.0
    first_rejects: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _label(raw: str | None, entity: str) -> tuple[str | None, str | None]:
    """(canonical label, why unusable); a label that is not '<number> <unit>' at all raises."""
    if raw is None or raw.strip() == "":
        return None, None
    try:
        return str(parse_label(raw, entity)), None
    except UnitNotAllowed as exc:
        return None, str(exc)


def _sample(record: dict[str, str], row_number: int, has_index: bool, local_root: Path | None) -> Sample:
    link = (record.get("image_link") or "").strip()
    entity = (record.get("entity_name") or "").strip()
    if not link:
        raise ValueError("empty image_link")
    if (problem := link_problem(link, local_root)) is not None:
        raise ValueError(problem)
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


def read_rows(path: Path, local_root: Path | None = None) -> Iterator[Sample | Reject]:
    """Samples and rejects in file order. Train files have no index: the data row number
    (0 for the first row after the header) stands in for it. Links that are not http(s) must
    name regular files inside `local_root`."""
    with path.open("rb") as handle:
        lines = enumerate(_decoded(handle, path), 1)
        header = _header(next(lines, None), path)
        has_index, seen = "index" in header, {}
        for row_number, (line, fields, raw) in enumerate(_records(lines, len(header))):
            if isinstance(fields, str):
                yield Reject(line, fields, raw)
            else:
                yield _parse_row(header, fields, line, raw, row_number, has_index, seen, local_root)


def _decoded(handle: Iterable[bytes], path: Path) -> Iterator[str]:
    """The file's lines as text; the first byte that is not UTF-8 stops the file, named by offset."""
    offset = 0
    for number, raw in enumerate(handle, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestError(
                f"{path} is not UTF-8 text: byte offset {offset + exc.start} (line {number}) holds "
                f"0x{raw[exc.start]:02x}; save the file as UTF-8 and ingest it again "
                "(nothing from it was stored)") from None
        yield text.removeprefix("\ufeff") if number == 1 else text
        offset += len(raw)


def _header(first: tuple[int, str] | None, path: Path) -> list[str]:
    header = next(csv.reader([first[1]]), None) if first else None
    if not header:
        raise IngestError(f"{path}: empty file, expected a header with {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise IngestError(f"{path}: header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
    return header


class _Lines:
    """The file's lines as the csv reader pulls them, remembering those of the current record
    so that a bad record can give back all but its first line, to be read again."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines = lines
        self.again: list[tuple[int, str]] = []   # lines to read again, the next one last
        self.record: list[tuple[int, str]] = []  # the current record's lines

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if len(self.record) == MAX_RECORD_LINES:
            raise StopIteration  # the reader sees the data end inside the open quote
        item = self.again.pop() if self.again else next(self.lines)
        self.record.append(item)
        return item[1]

    def give_back(self) -> None:
        self.again.extend(reversed(self.record[1:]))
        del self.record[1:]


def _records(lines: Iterator[tuple[int, str]], width: int) -> Iterator[tuple[int, list[str] | str, str]]:
    """(first line, fields or why the record cannot be read, raw text) per CSV record.

    A quoted field may span lines. A quote that stays open (or whose record, read across lines,
    comes out the wrong width) costs only its own line: the lines after it are read again, so
    one stray quote never swallows the rows that follow."""
    source = _Lines(lines)
    reader = csv.reader(source, strict=True)  # after an error it starts afresh on the next line
    while True:
        source.record = []
        try:
            fields, why = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            fields, why = [], _reason(str(exc))
        if len(source.record) > 1 and (why is not None or len(fields) != width):
            source.give_back()  # the quote opened on the first line is the fault, whatever broke later
            why = STRAY_QUOTE
        raw = "".join(text for _, text in source.record).rstrip("\r\n")
        yield source.record[0][0], fields if why is None else why, raw


def _reason(error: str) -> str:
    """Why the csv module (strict) could not read a record, in a user's words."""
    if error == "unexpected end of data":
        return STRAY_QUOTE
    if "field larger than field limit" in error:
        return f"a field is longer than {csv.field_size_limit()} characters (the csv module's limit)"
    if "expected after" in error:
        return 'stray quote: text follows the closing " of a quoted field'
    return f"unreadable CSV: {error}"


def _parse_row(header: list[str], fields: list[str], line: int, raw: str, row_number: int,
               has_index: bool, seen: dict[int, int], local_root: Path | None) -> Sample | Reject:
    if len(fields) != len(header):
        return Reject(line, f"expected {len(header)} fields, got {len(fields)}", raw)
    try:
        sample = _sample(dict(zip(header, fields)), row_number, has_index, local_root)
    except ValueError as exc:
        return Reject(line, str(exc), raw)
    if sample.idx in seen:
        return Reject(line, f"duplicate index {sample.idx} (first on line {seen[sample.idx]})", raw)
    seen[sample.idx] = line
    return sample


async def _write_batch(conn: aiosqlite.Connection, split: str, source: str,
                       samples: list[Sample], rejects: list[Reject]) -> int:
    """Write one batch; returns how many labels changed."""
    await conn.executemany(INSERT_IMAGE, [(s.link,) for s in samples])
    changed = await _changed_labels(conn, split, samples)
    await conn.executemany(UPDATE_LABEL, [(s.label, s.raw_label, s.label_error, split, s.idx) for s in changed])
    await conn.executemany(INSERT_SAMPLE, [
        (split, s.idx, s.link, s.group_id, s.entity, s.label, s.raw_label, s.label_error)
        for s in samples])
    await conn.executemany(INSERT_REJECT, [(split, source, r.line, r.reason, r.raw[:RAW_LIMIT])
                                           for r in rejects])
    return len(changed)


async def _changed_labels(conn: aiosqlite.Connection, split: str, samples: list[Sample]) -> list[Sample]:
    """The samples already stored (same index, image and entity) whose label differs; a file
    without an entity_value column (raw_label None) never changes labels."""
    labelled = [s for s in samples if s.raw_label is not None]
    if not labelled:
        return []
    ids = id_list(s.idx for s in labelled)
    stored = {r[0]: tuple(r)[1:] for r in await fetch_all(conn, STORED_LABELS.format(ids=ids), (split,))}
    return [s for s in labelled if (old := stored.get(s.idx)) is not None
            and old[:2] == (s.entity, s.link) and old[2:] != (s.label, s.raw_label, s.label_error)]


Progress = Callable[[int], None]   # called with the rows read so far after each committed batch


async def ingest(conn: aiosqlite.Connection, path: Path, split: str,
                 local_root: Path | None = None, progress: Progress | None = None) -> IngestReport:
    """Ingest one CSV into `split`, committing every BATCH rows; links that are not http(s)
    are accepted only as regular files inside `local_root`. A file that is not UTF-8 is refused
    before anything is written; on another error the batches committed stay (ingesting the
    file again completes it)."""
    config = {"file": str(path), "split": split, "local_images": local_root and str(local_root)}
    run_id = await start_run(conn, "ingest", json.dumps(config))
    try:
        sha256 = _check_text(path)
        report = await _ingest(conn, path, split, local_root, progress or (lambda rows: None))
    except BaseException as exc:
        await conn.rollback()
        await finish_run(conn, run_id, json.dumps({"error": str(exc)}), status="failed")
        raise
    # the content's digest: `amlc eval` tells a model's training file by it (amlc.llm.origin)
    await finish_run(conn, run_id, json.dumps({**report.as_dict(), "sha256": sha256}))
    return report


def _check_text(path: Path) -> str:
    """Refuse a file that is not UTF-8 before any of it is written (a quick pass over its
    bytes); returns their sha256."""
    digest = hashlib.sha256()

    def digested(handle: BinaryIO) -> Iterator[bytes]:
        for raw in handle:
            digest.update(raw)
            yield raw

    with open(path, "rb") as handle:
        for _ in _decoded(digested(handle), path):
            pass
    return digest.hexdigest()


async def _ingest(conn: aiosqlite.Connection, path: Path, split: str, local_root: Path | None,
                  progress: Progress) -> IngestReport:
    report = IngestReport(str(path), split)
    started = time.perf_counter()
    await conn.execute(CLEAR_REJECTS, (split, path.name))
    # counted, not taken from total_changes, which triggers on samples would inflate
    stored_before = await _count(conn, split)
    samples: list[Sample] = []
    rejects: list[Reject] = []
    for item in read_rows(path, local_root):
        report.rows += 1
        if isinstance(item, Reject):
            rejects.append(item)
            _note_reject(report, item)
        else:
            samples.append(item)
            report.unusable_labels += item.label_error is not None
        if len(samples) + len(rejects) >= BATCH:
            report.labels_changed += await _write_batch(conn, split, path.name, samples, rejects)
            await conn.commit()   # writers beside the ingest (amlc run) wait for a batch, not the file
            progress(report.rows)
            samples, rejects = [], []
    report.labels_changed += await _write_batch(conn, split, path.name, samples, rejects)
    report.inserted = await _count(conn, split) - stored_before
    await conn.commit()
    progress(report.rows)
    report.already_present = report.rows - report.rejected - report.inserted
    report.seconds = time.perf_counter() - started
    return report


async def _count(conn: aiosqlite.Connection, split: str) -> int:
    return (await fetch_all(conn, "SELECT count(*) FROM samples WHERE split = ?", (split,)))[0][0]


def _note_reject(report: IngestReport, reject: Reject) -> None:
    report.rejected += 1
    if len(report.first_rejects) < 20:
        report.first_rejects.append(f"line {reject.line}: {reject.reason}")
