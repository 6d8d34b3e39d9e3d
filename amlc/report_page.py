"""`amlc report`: one static HTML page to look at a split's answers the way errors are found:
the photo with every OCR box drawn, the candidates with their probabilities, each source's
answer and the label, wrong rows grouped by kind, and a unit confusion table per entity.

The page opens from disk (thumbnails are embedded, no script or style is fetched) and stays
small on a large split: at most `per_kind` rows of each kind, the least sure first.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import aiosqlite

from .export import best_answers, write_atomically
from .extract import Extractor
from .extract.baseline import truth_in_text
from .extract.candidates import Candidate
from .metric import SAME_QUANTITY, Report, error_kind, format_report, score
from .ocr.base import OcrLine, OcrResult
from .store import fetch_all
from .units import AnswerError, parse_label, parse_prediction

RIGHT, UNLABELLED = "right", "unlabelled"
NOT_IN_TEXT = "truth not in the text"
KIND_ORDER = (SAME_QUANTITY, "wrong unit", "wrong value", NOT_IN_TEXT, "blank",
              "answer where truth is empty", "invalid prediction", "unreadable truth", UNLABELLED, RIGHT)
KIND_NAMES = {"wrong value": "another number", "wrong unit": "another unit, another quantity"}
THUMB_SIDE = 480        # pixels of an embedded thumbnail's longer side
CHOSEN_COLOUR, LINE_COLOUR = "#e0245e", "#1d72d8"

ROWS_SQL = """
SELECT s.id, s.idx, s.entity, s.group_id, s.raw_label, s.label, i.path, i.width, i.height, o.lines, o.engine
FROM samples s JOIN images i ON i.id = s.image_id
LEFT JOIN ocr_results o ON o.image_id = s.image_id
WHERE s.split = :split AND (:idx IS NULL OR s.idx = :idx) ORDER BY s.idx, o.engine
"""
PREDICTIONS_SQL = """
SELECT p.sample_id, p.source, p.prediction, p.confidence FROM predictions p JOIN samples s ON s.id = p.sample_id
WHERE s.split = ?
"""


@dataclass
class RowView:
    """One sample as the page shows it."""
    idx: int
    entity: str
    group_id: str
    label: str                 # the label as the file wrote it ('' for none)
    labelled: bool
    answer: str                # the preferred source's answer ('' for a blank)
    source: str | None
    answers: dict[str, str]    # every source's answer
    image: Path | None
    size: tuple[int, int] | None
    lines_json: str | None = None
    confidence: float = 0.0    # the ranker's, as the extract stage stored it
    kind: str = UNLABELLED
    ranked: list[tuple[str, float, Any]] = field(default_factory=list)   # (answer, probability, mention)

    @cached_property
    def lines(self) -> list[OcrLine]:
        return OcrResult.from_json(self.lines_json).lines if self.lines_json else []

    def explain(self, extractor: Extractor) -> "RowView":
        """The ranker's candidates with their probabilities, for the rows a page shows."""
        if self.lines:
            self.ranked = extractor.predict(self.entity, self.lines, self.group_id or None).ranked
        return self

    @property
    def chosen_box(self) -> Any:
        """The box of the mention whose quantity the answer gives, where it has one."""
        try:
            answer = parse_prediction(self.answer, self.entity)
        except AnswerError:
            return None
        return next((m.box for _, _, m in self.ranked
                     if answer is not None and (m.value, m.unit) == (answer.value, answer.unit)), None)


def row_kind(row: RowView) -> str:
    """right, or why not: the kind of error, with 'truth not in the text' for rows that no
    choice among the OCR'd numbers could have won."""
    if not row.labelled:
        return UNLABELLED
    kind = error_kind(row.entity, row.label, row.answer)
    if kind is None:
        return RIGHT
    if row.label and kind != "blank" and not truth_in_text(row.entity, row.label, "\n".join(l.text for l in row.lines)):
        return NOT_IN_TEXT
    return kind


async def load_rows(conn: aiosqlite.Connection, split: str, root: Path, only_idx: int | None = None) -> list[RowView]:
    """Every sample of the split (or the one with index only_idx) with its OCR lines (the
    first engine's), answers, the ranker's stored confidence and its kind of error."""
    best = {a.sample_id: a for a in await best_answers(conn, split)}
    answers: dict[int, dict[str, str]] = defaultdict(dict)
    confidence: dict[int, float] = {}
    for r in await fetch_all(conn, PREDICTIONS_SQL, (split,)):
        answers[r["sample_id"]][r["source"]] = r["prediction"]
        if r["source"] == "rules":
            confidence[r["sample_id"]] = r["confidence"] or 0.0
    rows: dict[int, RowView] = {}
    for r in await fetch_all(conn, ROWS_SQL, {"split": split, "idx": only_idx}):
        if r["id"] in rows:
            continue   # a second OCR engine's lines: the page shows the first
        chosen = best[r["id"]]
        row = RowView(r["idx"], r["entity"], r["group_id"], (r["raw_label"] or "").strip(), chosen.has_truth,
                      chosen.prediction, chosen.source, answers[r["id"]],
                      root / r["path"] if r["path"] else None,
                      (r["width"], r["height"]) if r["width"] else None, r["lines"], confidence.get(r["id"], 0.0))
        row.kind = row_kind(row)
        rows[r["id"]] = row
    return list(rows.values())


def unit_confusion(rows: Sequence[RowView]) -> dict[str, Counter[tuple[str, str]]]:
    """Per entity, (label unit, answer unit) counts over the labelled rows that were answered."""
    table: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for row in rows:
        if not (row.labelled and row.label and row.answer):
            continue
        try:
            truth, answer = parse_label(row.label, row.entity), parse_prediction(row.answer, row.entity)
        except AnswerError:
            continue
        if answer is not None:
            table[row.entity][(truth.unit, answer.unit)] += 1
    return dict(table)


def gallery(rows: Sequence[RowView], per_kind: int) -> tuple[list[RowView], Counter[str]]:
    """The rows the page shows, at most per_kind of each kind, the least sure first; and how
    many of each kind were left out."""
    by_kind: dict[str, list[RowView]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
    shown, left_out = [], Counter()
    for kind in sorted(by_kind, key=_kind_rank):
        ordered = sorted(by_kind[kind], key=lambda r: (r.confidence, r.idx))
        shown += ordered[:per_kind]
        left_out[kind] = max(0, len(ordered) - per_kind)
    return shown, left_out


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def thumbnail(path: Path | None) -> str | None:
    """The image as an embedded JPEG (data URI), or None where the file is missing or unreadable."""
    from PIL import Image
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=80)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _points(box: Any) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in box)


def figure_svg(row: RowView) -> str:
    """The photo with every OCR line's box, the chosen mention's box in another colour. The
    SVG's coordinates are the stored boxes' own (pixels of the original image)."""
    width, height = row.size or _extent_of(row.lines)
    uri = thumbnail(row.image)
    picture = (f'<image href="{uri}" x="0" y="0" width="{width}" height="{height}"/>' if uri
               else f'<rect width="{width}" height="{height}" fill="#eee"/>')
    chosen = row.chosen_box
    boxes = "".join(
        f'<polygon class="ocr-box" points="{_points(line.box)}" fill="none" stroke="{LINE_COLOUR}" '
        f'stroke-width="{max(width, height) / 300:.1f}"><title>{html.escape(line.text)} '
        f'({line.confidence:.2f})</title></polygon>' for line in row.lines)
    if chosen:
        boxes += (f'<polygon class="chosen-box" points="{_points(chosen)}" fill="none" stroke="{CHOSEN_COLOUR}" '
                  f'stroke-width="{max(width, height) / 120:.1f}"/>')
    return (f'<svg viewBox="0 0 {width} {height}" width="{THUMB_SIDE}" preserveAspectRatio="xMinYMin meet" '
            f'xmlns="http://www.w3.org/2000/svg">{picture}{boxes}</svg>')


def _extent_of(lines: Sequence[OcrLine]) -> tuple[int, int]:
    xs = [x for line in lines for x, _ in line.box] or [100]
    ys = [y for line in lines for _, y in line.box] or [100]
    return int(max(xs)) + 10, int(max(ys)) + 10


GUIDE_WORDS = {"vertical": "beside an upright line", "horizontal": "beside a level line",
               "slanted": "beside a slanted line"}


def _candidate_item(text: str, probability: float, mention: Candidate) -> str:
    """One candidate: its answer, probability and, on a drawing, the line drawn beside it."""
    guide = GUIDE_WORDS.get(mention.guide, "")
    return f"<li>{html.escape(text)} <b>{probability:.2f}</b>{f' <small>{guide}</small>' if guide else ''}</li>"


def _card(row: RowView, split: str) -> str:
    candidates = "".join(_candidate_item(*item) for item in row.ranked[:8])
    answers = "".join(f"<li>{html.escape(source)}: {html.escape(answer) or '(blank)'}</li>"
                      for source, answer in sorted(row.answers.items()))
    kind = KIND_NAMES.get(row.kind, row.kind)
    return (f'<div class="card" data-entity="{row.entity}" data-kind="{html.escape(row.kind)}" '
            f'data-idx="{row.idx}" data-confidence="{row.confidence:.4f}">'
            f'{figure_svg(row)}<div class="about"><h3>#{row.idx} {row.entity} <span class="kind">{kind}</span></h3>'
            f'<p>label <b>{html.escape(row.label) or "-"}</b>; answer <b>{html.escape(row.answer) or "(blank)"}</b>'
            f' from {html.escape(row.source or "no source")}; confidence {row.confidence:.2f}; group {row.group_id}</p>'
            f'<p>candidates</p><ol>{candidates}</ol><p>answers</p><ul>{answers}</ul>'
            f'<code>amlc show {row.idx} --split {html.escape(split)}</code></div></div>')


def _cells(tag: str, row: Sequence[Any]) -> str:
    return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)


def _table(head: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    return f"<table><tr>{_cells('th', head)}</tr>" + "".join(f"<tr>{_cells('td', r)}</tr>" for r in body) + "</table>"


def _options(values: Sequence[str], names: dict[str, str] | None = None) -> str:
    names = names or {}
    return "".join(f'<option value="{html.escape(v)}">{html.escape(names.get(v, v))}</option>' for v in values)


def _scores(reports: dict[str, Report]) -> str:
    body = []
    for source, report in reports.items():
        for entity, (numeric, strict) in sorted(report.per_entity.items()):
            body.append([source, entity, int(numeric.n), f"{numeric.f1:.3f}", f"{strict.f1:.3f}"])
        body.append([source, "all", int(report.numeric.n), f"{report.f1:.3f}", f"{report.strict.f1:.3f}"])
    return _table(["source", "entity", "n", "F1", "F1 strict"], body)


def _confusion(table: dict[str, Counter[tuple[str, str]]]) -> str:
    parts = []
    for entity, counts in sorted(table.items()):
        truths = sorted({t for t, _ in counts})
        answers = sorted({a for _, a in counts})
        body = [[t, *(counts[(t, a)] for a in answers)] for t in truths]
        parts.append(f"<h3>{entity}</h3>" + _table(["label unit \\ answer unit", *answers], body))
    return "".join(parts)


FILTER_SCRIPT = """
function applyFilter() {
  const entity = document.getElementById('entity').value, kind = document.getElementById('kind').value;
  for (const card of document.querySelectorAll('.card')) {
    card.hidden = (entity && card.dataset.entity !== entity) || (kind && card.dataset.kind !== kind);
  }
}
document.getElementById('entity').addEventListener('change', applyFilter);
document.getElementById('kind').addEventListener('change', applyFilter);
"""
STYLE = """
body{font:14px sans-serif;margin:1em 2em;color:#222} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right} .card{display:flex;gap:1em;
border-top:1px solid #ddd;padding:.8em 0} .about h3{margin:0} .kind{color:#e0245e} svg{background:#fafafa}
"""


def render_page(split: str, rows: Sequence[RowView], per_kind: int) -> str:
    """The whole page as one string."""
    labelled = [r for r in rows if r.labelled]
    sources = sorted({s for r in labelled for s in r.answers})
    reports = {s: score((r.entity, r.label, r.answers.get(s, "")) for r in labelled) for s in sources}
    shown, left_out = gallery(rows, per_kind)
    extractor = Extractor.load()
    shown = [row.explain(extractor) for row in shown]
    kinds = Counter(r.kind for r in rows)
    entities = sorted({r.entity for r in rows})
    summary = [[KIND_NAMES.get(k, k), kinds[k], left_out[k]] for k in sorted(kinds, key=_kind_rank)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>amlc report: {html.escape(split)}</title>"
             f"<style>{STYLE}</style></head><body><h1>amlc report: split {html.escape(split)}</h1>",
             f"<p>{len(rows)} samples, {len(labelled)} labelled; the gallery shows at most {per_kind} rows of "
             f"each kind, the least sure first ({sum(left_out.values())} left out).</p>"]
    if labelled:
        preferred = score((r.entity, r.label, r.answer) for r in labelled)
        absent = preferred.mix_coverage()[1]
        parts += ["<h2>F1 per source and entity</h2>", _scores(reports),
                  f"<p>entities absent from this split: {', '.join(absent) or 'none'}</p>",
                  "<h2>Unit confusion (label x answer)</h2>", _confusion(unit_confusion(rows)),
                  f"<pre>{html.escape(format_report(preferred))}</pre>"]
    parts += ["<h2>Rows by kind</h2>", _table(["kind", "rows", "left out of the gallery"], summary),
              "<h2>Gallery</h2><p>entity <select id='entity'><option value=''>all</option>"
              f"{_options(entities)}</select> kind <select id='kind'><option value=''>all</option>"
              f"{_options(sorted(kinds, key=_kind_rank), KIND_NAMES)}</select></p>",
              *(_card(r, split) for r in shown), f"<script>{FILTER_SCRIPT}</script></body></html>"]
    return "".join(parts)


def page_facts(rows: Sequence[RowView]) -> dict[str, Any]:
    """What the page holds, for --json."""
    return {"rows": len(rows), "kinds": dict(Counter(r.kind for r in rows)),
            "unit_confusion": {e: {f"{t} -> {a}": n for (t, a), n in c.items()}
                               for e, c in unit_confusion(rows).items()}}


def draw_row(row: RowView, out: Path) -> None:
    """The photo with every OCR box (blue) and the chosen mention's box (red), as a PNG."""
    from PIL import Image, ImageDraw
    row.explain(Extractor.load())
    if row.image is None or not row.image.is_file():
        raise FileNotFoundError(f"the image of #{row.idx} is not in the work folder (not fetched yet?)")
    with Image.open(row.image) as img:
        picture = img.convert("RGB")
    draw = ImageDraw.Draw(picture)
    side = max(picture.size)
    for line in row.lines:
        draw.polygon([tuple(p) for p in line.box], outline=LINE_COLOUR, width=max(1, side // 300))
    if row.chosen_box:
        draw.polygon([tuple(p) for p in row.chosen_box], outline=CHOSEN_COLOUR, width=max(2, side // 120))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_atomically(out, buffer.getvalue())

