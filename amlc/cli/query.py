"""Commands that only read the store: status, show, sql. Safe beside a running `amlc run`."""

from __future__ import annotations

import sqlite3
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
    if summary["predictions"]:
        console.print(_table("predictions", ["source", "rows", "answered"],
                             [[p["source"], p["n"], p["answered"]] for p in summary["predictions"]]))
    if summary["failures"]:
        console.print(_table("commonest failures", ["stage", "count", "reason"],
                             [[f["stage"], f["n"], f["error"]] for f in summary["failures"]]))


@click.command("show")
@click.argument("index", type=int)
@click.option("--split", default="test", show_default=True)
@json_option
@click.pass_context
def show_command(ctx: click.Context, index: int, split: str, as_json: bool) -> None:
    """One sample's journey: its image (link, file, size), the state and attempts of every
    stage with the last error, the OCR text per engine, every prediction and the label.

    \b
    Example:
      amlc show 42 --split test
    """
    journey = run_async(lambda: using_store(workdir(ctx).store, lambda conn: sample_journey(conn, split, index)))
    if journey is None:
        raise click.ClickException(f"no sample with index {index} in split {split!r}")
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


COMMANDS = [status_command, show_command, sql_command]
