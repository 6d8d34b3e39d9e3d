"""Commands that only read the store: status, show, sql. Safe beside a running `amlc run`."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..report import sample_journey, status_summary
from ..store import fetch_all, rows_as_dicts
from .common import console, json_option, print_json, run_async, using_store, workdir

STATES = ("pending", "leased", "done", "failed")


@click.command("status")
@json_option
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Counts per split and per stage (pending, leased, done, failed), the commonest
    failure reasons, rejected input rows and predictions per source.

    \b
    Example (from another terminal while `amlc run` works):
      watch -n 5 amlc status
    """
    summary = run_async(lambda: using_store(workdir(ctx).store, status_summary))
    if as_json:
        print_json(summary)
        return
    console.print(_table("samples", ["split", "samples", "images", "labelled", "rejected rows"],
                         [[s["split"], s["samples"], s["images"], s["labelled"],
                           summary["rejects"].get(s["split"], 0)] for s in summary["splits"]]))
    console.print(_table("stages", ["stage", *STATES],
                         [[stage, *(counts.get(s, 0) for s in STATES)]
                          for stage, counts in summary["stages"].items()]))
    if summary["ocr"]:
        ocr = summary["ocr"]
        console.print(f"OCR (newest result): {ocr['engine']} on {ocr['runtime'] or 'a runtime not recorded'}",
                      markup=False, highlight=False)
    if summary["predictions"]:
        console.print(_table("predictions", ["source", "rows", "answered"],
                             [[p["source"], p["n"], p["answered"]] for p in summary["predictions"]]))
    if summary["failures"]:
        console.print(_table("commonest failures", ["stage", "count", "cause", "for example"],
                             [[f["stage"], f["n"], f["cause"], f["error"]] for f in summary["failures"]]))


@click.command("show")
@click.argument("index", type=int)
@click.option("--split", default="test", show_default=True)
@click.option("--image", "image_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the photo with every OCR line's box (blue) and the chosen answer's "
                   "box (red) into this PNG.")
@json_option
@click.pass_context
def show_command(ctx: click.Context, index: int, split: str, image_out: Path | None, as_json: bool) -> None:
    """One sample's journey: its image (link, file, size), the state and attempts of every
    stage with the last error, the OCR text per engine, every prediction and the label.

    \b
    Examples:
      amlc show 42 --split test
      amlc show 42 --split test --image row42.png
    """
    journey = run_async(lambda: using_store(workdir(ctx).store, lambda conn: sample_journey(conn, split, index)))
    if journey is None:
        raise click.ClickException(f"no sample with index {index} in split {split!r}")
    if image_out is not None:
        _draw_sample(ctx, split, index, image_out)
    if as_json:
        print_json(journey)
        return
    sample, image = journey["sample"], journey["image"] or {}
    console.print(f"[bold]{split} #{index}[/] {sample['entity']} (group {sample['group_id']}) "
                  f"label: {sample['label'] or sample['raw_label'] or '-'}"
                  + (f" [red]({sample['label_error']})[/]" if sample["label_error"] else ""))
    console.print(f"image {image.get('link')} -> {image.get('path') or 'not downloaded'} "
                  f"{image.get('width') or '?'}x{image.get('height') or '?'}", markup=False)
    console.print(_table("stages", ["stage", "state", "attempts", "last error"],
                         [[j["stage"], j["state"], j["attempts"], j["last_error"] or ""]
                          for j in journey["jobs"]]))
    for ocr in journey["ocr"]:
        console.print(f"[bold]OCR ({ocr['engine']}, {ocr['seconds'] or 0:.2f} s)[/]")
        console.print(ocr["text"] or "(no text)", markup=False)
    console.print(_table("predictions", ["source", "run", "prediction", "confidence"],
                         [[p["source"], p["run_id"], p["prediction"] or "(blank)", p["confidence"]]
                          for p in journey["predictions"]]))


def _draw_sample(ctx: click.Context, split: str, index: int, out: Path) -> None:
    from ..report_page import draw_row, load_rows
    work = workdir(ctx)
    rows = run_async(lambda: using_store(work.store, lambda conn: load_rows(conn, split, work.root, index)))
    try:
        draw_row(rows[0], out)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"wrote {out}", markup=False)


@click.command("report")
@click.option("--split", required=True, help="The split to look at (labelled or not).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: WORKDIR/exports/report-<split>.html).")
@click.option("--per-kind", type=click.IntRange(min=1), default=60, show_default=True,
              help="Rows of each kind (right, blank, another unit, ...) the gallery shows at most.")
@json_option
@click.pass_context
def report_command(ctx: click.Context, split: str, out: Path | None, per_kind: int, as_json: bool) -> None:
    """Write one self-contained HTML page about a split: F1 per source and entity (and the
    entities absent), wrong rows grouped by kind, a unit confusion table per entity, and a
    gallery of rows, each with its photo and every OCR box drawn, the chosen answer's box
    marked, the candidates with their probabilities, each source's answer and the label.
    The gallery holds at most --per-kind rows of each kind, the least sure first. The page
    opens from disk: no server, no network.

    \b
    Examples:
      amlc report --split photos-val
      amlc report --split test --out test-report.html --per-kind 200
    """
    from ..export import write_atomically
    from ..report_page import load_rows, page_facts, render_page
    work = workdir(ctx)
    rows = run_async(lambda: using_store(work.store, lambda conn: load_rows(conn, split, work.root)))
    if not rows:
        raise click.ClickException(f"split {split!r} has no samples")
    out = out or work.exports / f"report-{split}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, render_page(split, rows, per_kind))
    if as_json:
        print_json({"out": str(out), **page_facts(rows)})
    else:
        console.print(f"wrote {out} ({len(rows)} samples)", markup=False)


@click.command("sql")
@click.argument("query")
@json_option
@click.pass_context
def sql_command(ctx: click.Context, query: str, as_json: bool) -> None:
    """Run a read-only SQL QUERY on the store and print the rows. Views `sample_status`
    and `stage_counts` keep common questions short; writes are refused.

    \b
    Examples:
      amlc sql "SELECT * FROM stage_counts"
      amlc sql "SELECT idx, entity, prediction FROM sample_status WHERE split='test' LIMIT 10"
    """
    try:
        rows = run_async(lambda: using_store(workdir(ctx).store, lambda conn: fetch_all(conn, query)))
    except sqlite3.Error as exc:
        raise click.ClickException(f"query failed: {exc}") from None
    records = rows_as_dicts(rows)
    if as_json:
        print_json(records)
        return
    columns = list(records[0]) if records else []
    console.print(_table(None, columns, [list(r.values()) for r in records]))
    console.print(f"{len(records)} row(s)")


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


COMMANDS = [status_command, show_command, report_command, sql_command]
