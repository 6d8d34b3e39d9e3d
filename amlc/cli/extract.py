"""`amlc eval-text`: score the rule extractor on labelled OCR text, no images needed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import click

from ..extract.choose import Extractor
from ..extract.data import TextRow, read_text_rows, split_rows
from ..extract.evaluate import evaluate, extractor_fn
from ..metric import format_report


def _has_image_links(rows: list[TextRow]) -> bool:
    return bool(rows) and all(row.image_link for row in rows)


def select_split(rows: list[TextRow], split: str | None) -> tuple[list[TextRow], str]:
    """The rows a split names. Default: 'val' for rows with image links (ocr_labeled.csv's
    shape, which the extractor was trained on), else 'all'."""
    split = split or ("val" if _has_image_links(rows) else "all")
    if split == "all":
        return rows, split
    train, val = split_rows(rows)
    return (val if split == "val" else train), split


def write_predictions(path: Path, rows: list[TextRow], predictions: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_link", "group_id", "entity_name", "entity_value", "prediction"])
        for row, pred in zip(rows, predictions):
            writer.writerow([row.image_link, row.group_id, row.entity, row.truth, pred])


def llm_fn(model_gguf: Path, total: int) -> Callable[[TextRow], str]:
    """A row's answer from a GGUF model as the predict stage gives it (its choice among the rules'
    candidates, prompted as in training), with a progress bar or line over `total` rows."""
    from ..llm.compare import model_fn

    return model_fn(str(model_gguf), total)


@click.command("eval-text")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--predictions", "predictions_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write each row's prediction beside its truth to this CSV.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default=None,
              help="Which rows to score. The split hashes each row's image_link (seed 0), the "
                   "same split the shipped model was trained on. Default: val when every row has "
                   "an image_link (ocr_labeled.csv), else all.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The rules' model JSON (default: the shipped amlc/extract/model.json), or a "
                   "GGUF language model to score the LLM path with the same prompts as training.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def eval_text_command(csv_file: Path, predictions_path: Path | None, split: str | None,
                      model_path: Path | None, as_json: bool) -> None:
    """Predict each row's answer from its OCR text alone and print precision, recall and F1
    (numeric and strict), overall and per entity, ending with the line `f1=<numeric F1>`.

    CSV_FILE needs the columns entity_name, entity_value and ocr_text (group_id and
    image_link are used when present).

    \b
    Examples:
      amlc eval-text ../shared/data/ocr_labeled.csv --split val
      amlc eval-text ../shared/data/ocr_labeled.csv --model amlc-work/models/x/model-q8_0.gguf
    """
    rows, split = select_split(read_text_rows(csv_file), split)
    if not rows:
        raise click.ClickException(f"no rows in split {split!r} of {csv_file}")
    is_llm = model_path is not None and model_path.suffix == ".gguf"
    predict = llm_fn(model_path, len(rows)) if is_llm else extractor_fn(Extractor.load(model_path))
    report, predictions = evaluate(rows, predict)
    if predictions_path:
        write_predictions(predictions_path, rows, predictions)
    if as_json:
        click.echo(json.dumps({"split": split, "rows": len(rows), **report.as_dict()}, indent=2))
    else:
        click.echo(f"{csv_file.name}: {len(rows)} rows (split {split})")
        click.echo(format_report(report))
    click.echo(f"f1={report.f1:.4f}")


COMMANDS = [eval_text_command]
