"""Commands that move data in and out of the store: ingest, export, check, eval."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..check import check_submission
from ..export import (RULES, Choice, ExportError, choose_source, export_answers, provenance, rows_learned,
                      render_submission, split_sources, write_atomically)
from ..ingest import IngestError, ingest
from ..metric import format_report
from ..report import evaluate_split
from ..store import finish_run, start_run
from .common import console, json_option, print_json, run_async, using_store, workdir

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
source_option = click.option(
    "--source", "sources", multiple=True, metavar="NAME",
    help="Prediction source to prefer (repeatable, in order), e.g. a model name or 'rules'. "
         "Default: the newest model answer, else the rules' answer.")


PROGRESS_EVERY = 2.0   # seconds between an ingest's progress lines


@click.command("ingest")
@click.argument("csv_file", type=existing_file)
@click.option("--split", required=True, help="Name of the split these rows belong to: test, train, val...")
@click.option("--local-images", "local_root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Also accept links that are local files (file:///... or a path; a relative path is "
                   "taken from DIR), but only regular files inside DIR once symlinks and '..' are "
                   "resolved. Without it every link must be http(s); others are rejected by line. "
                   "Give `amlc run` the same --local-images DIR so it reads them.")
@json_option
@click.pass_context
def ingest_command(ctx: click.Context, csv_file: Path, split: str, local_root: Path | None,
                   as_json: bool) -> None:
    """Load an official CSV (test.csv, train.csv, or a labelled file with index and
    entity_value) into the store under SPLIT.

    Re-ingesting a file adds nothing twice; a labelled file ingested again updates the labels
    that changed and says how many. Bad rows (unknown entity, stray quote, a field over the
    csv module's limit, a link that is not http(s)) are reported with their line number,
    stored in the `rejects` table and never stop the rest. A file that is not UTF-8 is refused
    whole, naming the byte offset of its first bad byte. train.csv has no index column: the
    data row number (0 for the first row) stands in for it.

    \b
    Examples:
      amlc ingest ../shared/data/test.csv --split test
      amlc ingest mine.csv --split val --local-images ~/photos   # file:// links into ~/photos
    """
    said = [time.monotonic()]

    def progress(rows: int) -> None:   # a line every few seconds on a long file (not for --json)
        if not as_json and time.monotonic() - said[0] >= PROGRESS_EVERY:
            said[0] = time.monotonic()
            click.echo(f"ingest: {rows:,} rows read and stored", err=True)

    try:
        report = run_async(lambda: using_store(workdir(ctx).store,
                                               lambda conn: ingest(conn, csv_file, split, local_root, progress),
                                               write=True))
    except IngestError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
        return
    click.echo(f"{csv_file.name} -> split {split!r}: {report.rows} rows, {report.inserted} new, "
               f"{report.already_present} already present, {report.labels_changed} label(s) changed "
               f"and updated, {report.rejected} rejected, "
               f"{report.unusable_labels} with a label outside the allowed units "
               f"({report.seconds:.1f} s, {report.rows / max(report.seconds, 1e-9):,.0f} rows/s)")
    for line in report.first_rejects:
        click.echo(f"  rejected {line}")


@click.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--source", default=None, metavar="NAME",
              help="Use NAME's answers ('rules', or a model's name as `amlc status` lists it) "
                   "instead of the source the newest `amlc eval` scored best.")
@click.option("--keep-model-blanks", is_flag=True,
              help="Where the model used answered blank, keep the blank. Without it a model's "
                   "blank never replaces a rules answer: the rules' answer stands in.")
@click.pass_context
def export_command(ctx: click.Context, out: Path, split: str, source: str | None,
                   keep_model_blanks: bool) -> None:
    """Write OUT as a submission (index,prediction) with every index of SPLIT once, in
    order, blank where no answer exists yet.

    The answers come from one source: the one with the best F1 in the newest `amlc eval`
    (which scores every source alone on a labelled split), so the rules unless a model beat
    them; or the one named with --source. Where a model is used but has no answer for a row,
    or a blank one, the rules' answer stands in (unless --keep-model-blanks). The export says
    which source it used and why. Safe while `amlc run` works on the same store; the file is
    checked before it is written and replaced atomically.

    \b
    Examples:
      amlc eval --split val                     # scores rules and every model on val
      amlc export submission.csv --split test   # uses whichever scored best there
      amlc export submission.csv --split test --source smollm2-q8_0 --keep-model-blanks
    """
    async def gather(conn):
        choice = Choice(source, "asked for with --source") if source else await choose_source(conn, split)
        answers = await export_answers(conn, split, choice.source, keep_model_blanks)
        return choice, answers, await split_sources(conn, split)

    choice, answers, answered_by = run_async(lambda: using_store(workdir(ctx).store, gather))
    if not answers:
        raise click.ClickException(f"split {split!r} has no samples; ingest it first")
    if source and source not in answered_by:
        raise click.ClickException(f"source {source!r} has no answers for split {split!r}; sources "
                                   f"with answers: {', '.join(answered_by) or 'none yet'}")
    try:
        write_atomically(out, render_submission(answers))
    except ExportError as exc:
        raise click.ClickException(f"refusing to write {out}: {exc}") from None
    stand_in = "" if choice.source == RULES else (
        "; the rules' answer where it has none" + ("" if keep_model_blanks else " or a blank one"))
    click.echo(f"split {split!r}: answers from {choice.source!r} ({choice.why}){stand_in}")
    click.echo(f"wrote {out}: {len(answers)} rows: {provenance(answers)}")


@click.command("check")
@click.argument("submission", type=existing_file)
@click.option("--against", "test_csv", type=existing_file, required=True,
              help="The test CSV the submission answers (index and entity_name columns).")
@json_option
def check_command(submission: Path, test_csv: Path, as_json: bool) -> None:
    """Check SUBMISSION strictly: header, every index exactly once, no extra rows, each
    prediction '<number> <unit>' with a unit allowed for that row's entity. Exits 1 and names
    the first offending rows when anything is wrong.

    \b
    Example:
      amlc check submission.csv --against ../shared/data/test.csv
    """
    try:
        result = check_submission(submission, test_csv)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"ok": result.ok, "rows": result.rows, "answered": result.answered,
                    "problem_count": result.problem_count, "problems": result.problems})
    else:
        verdict = "OK" if result.ok else f"FAILED with {result.problem_count} problem(s)"
        console.print(f"{submission}: {verdict}; {result.rows} rows, {result.answered} answered")
        for problem in result.problems:
            console.print(f"  {problem}", markup=False)
    if not result.ok:
        raise SystemExit(1)


@click.command("eval")
@click.option("--split", required=True, help="A labelled split (ingested with entity_value).")
@source_option
@click.option("--only", is_flag=True, help="Score only the --source predictions, nothing else.")
@json_option
@click.pass_context
def eval_command(ctx: click.Context, split: str, sources: tuple[str, ...], only: bool,
                 as_json: bool) -> None:
    """Score the stored predictions of a labelled SPLIT with the official F1, numeric and
    strict (against the label as the file wrote it), per entity, overall and reweighted to
    the test set's entity mix, with a breakdown of errors. The result is recorded as a
    run in the store. The last line is `f1=<numeric F1>`.

    \b
    Example:
      amlc eval --split val --source rules --only
    """
    store = workdir(ctx).store

    async def scored(conn):
        run_id = await start_run(conn, "eval", json.dumps({"split": split, "sources": sources}))
        report, skipped = await evaluate_split(conn, split, sources, only)
        by_source = {}
        for source in await split_sources(conn, split):  # each alone too, for `amlc export`
            alone, _ = await evaluate_split(conn, split, (source,), only=True)
            by_source[source] = {"f1": alone.f1, "strict_f1": alone.strict.f1,
                                 "weighted_f1": alone.weighted()[0].f1,
                                 "learned_rows": await rows_learned(conn, source, split, store)}
        await finish_run(conn, run_id, json.dumps({**report.as_dict(), "skipped": skipped,
                                                   "by_source": by_source}))
        return report, skipped, by_source

    report, skipped, by_source = run_async(lambda: using_store(store, scored, write=True))
    if not report.per_entity:
        raise click.ClickException(f"split {split!r} has no labelled samples to score")
    if as_json:
        print_json({**report.as_dict(), "skipped_unlabelled": skipped, "by_source": by_source})
        return
    click.echo(format_report(report))
    if skipped:
        click.echo(f"skipped {skipped} samples without a usable label")
    click.echo("each source alone (what `amlc export` chooses on):")
    for source, s in by_source.items():
        learned = (f"  trained or fitted on {s['learned_rows']} of these rows: not evidence for export"
                   if s["learned_rows"] else "")
        click.echo(f"  {source:<28} F1 {s['f1']:.4f}{learned}")
    click.echo(f"each row with its photo, boxes and candidates: amlc report --split {split}")
    click.echo(f"f1={report.f1:.4f}")


COMMANDS = [ingest_command, export_command, check_command, eval_command]
