"""LLM commands: tiny-model, sft-data, train, export-model (registered by amlc.cli).

Also `score_model_on_text`, which scores a GGUF model on a labelled OCR CSV from Python.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..metric import Report, score

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
existing_path = click.Path(exists=True, path_type=Path)
out_dir = click.Path(file_okay=False, path_type=Path)


def default_labeled_csv() -> Path:
    from ..extract.data import OCR_LABELED

    return OCR_LABELED


def _echo_json(data: dict) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.command("tiny-model")
@click.argument("directory", type=out_dir)
@click.option("--from", "csv_file", type=existing_file, default=None,
              help="Labelled OCR CSV whose training half is the task text (default: shared ocr_labeled.csv).")
@click.option("--steps", type=int, default=None, help="Pre-training steps (default: TinySpec's).")
def tiny_model(directory: Path, csv_file: Path | None, steps: int | None) -> None:
    """Build a tiny Llama offline in DIRECTORY (HF format): a locally trained byte-level BPE
    tokenizer (Qwen2 pre-tokenizer) and a short full pre-training on task text mixed with
    synthetic copy rows, so that a LoRA can then learn the task. Nothing is downloaded."""
    from dataclasses import replace

    from ..llm.sft import read_labeled_csv, split_rows, to_records
    from ..llm.tiny import TinySpec, make_tiny_model

    train_rows, _ = split_rows(read_labeled_csv(csv_file or default_labeled_csv()))
    texts = [r["prompt"] + r["completion"] for r in to_records(train_rows)]
    spec = TinySpec() if steps is None else replace(TinySpec(), pretrain_steps=steps)
    _echo_json(make_tiny_model(directory, texts, spec))


@click.command("sft-data")
@click.option("--from", "csv_file", type=existing_file, default=None,
              help="Labelled OCR CSV (ocr_labeled.csv's columns).")
@click.option("--split", "store_split", default=None,
              help="Instead of --from: the store's labelled samples of this split that have OCR text.")
@click.option("--ocr-engine", default="rapidocr", show_default=True, help="Whose OCR text (with --split).")
@click.option("--out", "out", type=out_dir, required=True, help="Folder for train.jsonl and val.jsonl.")
@click.option("--seed", type=int, default=0, show_default=True, help="Split and resampling seed.")
@click.option("--train-size", type=int, default=None, help="Training rows after resampling (default: as many as in).")
@click.option("--candidates/--no-candidates", default=True, show_default=True,
              help="Put the rule extractor's candidate answers in the prompts.")
@click.pass_context
def sft_data(ctx: click.Context, csv_file: Path | None, store_split: str | None, ocr_engine: str, out: Path,
             seed: int, train_size: int | None, candidates: bool) -> None:
    """Write SFT rows (TRL prompt/completion JSONL): the training half resampled toward the
    test set's entity mix, the validation half as it is. Rows come from a labelled OCR CSV
    (--from) or from the store (--split: labelled samples whose images were OCR'd).

    \b
    Examples:
      amlc sft-data --from ../shared/data/ocr_labeled.csv --out sft/
      amlc sft-data --split train --out sft/
    """
    from ..llm.sft import build_sft_files

    if (csv_file is None) == (store_split is None):
        raise click.UsageError("give exactly one of --from CSV and --split NAME")
    source = csv_file or _store_rows(ctx, store_split or "", ocr_engine)
    if not source:
        raise click.ClickException(f"split {store_split!r} has no labelled samples with {ocr_engine} OCR text")
    _echo_json(build_sft_files(source, out, seed=seed, train_size=train_size, use_candidates=candidates))


STORE_ROWS_SQL = """
SELECT s.entity, o.text, s.label, s.group_id, i.link FROM samples s
JOIN images i ON i.id = s.image_id
JOIN ocr_results o ON o.image_id = s.image_id AND o.engine = ?
WHERE s.split = ? AND s.label IS NOT NULL ORDER BY s.idx
"""


def _store_rows(ctx: click.Context, split: str, ocr_engine: str) -> list:
    from ..llm.sft import LabeledRow
    from ..store import fetch_all
    from .common import run_async, using_store, workdir

    rows = run_async(lambda: using_store(workdir(ctx).store,
                                         lambda conn: fetch_all(conn, STORE_ROWS_SQL, (ocr_engine, split))))
    return [LabeledRow(*tuple(row)) for row in rows]


@click.command("train")
@click.option("--base", required=True, type=existing_path, help="Base model: an HF folder or a .gguf file.")
@click.option("--data", required=True, type=existing_file, help="SFT JSONL (prompt/completion).")
@click.option("--out", "out", required=True, type=out_dir, help="Run folder: checkpoints/, adapter/, train_info.json.")
@click.option("--config", "config_file", default=None,
              help="Hyperparameters: a TOML file or a name in amlc/llm/configs (lora_cpu, lora_gpu, smollm2_cpu, lora_tiny).")
@click.option("--max-steps", type=int, default=None, help="Override the config's max_steps.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT/checkpoints.")
def train(base: Path, data: Path, out: Path, config_file: str | None, max_steps: int | None, resume: bool) -> None:
    """LoRA fine-tune BASE on DATA: Unsloth when CUDA is present and it imports, else PEFT + TRL
    (decided at run time and recorded in OUT/train_info.json)."""
    from ..llm.train import load_config, train as run_training

    result = run_training(base, data, out, load_config(config_file, max_steps=max_steps), resume=resume)
    _echo_json({"backend": result.backend, "adapter": result.adapter_dir, "steps": result.steps,
                "final_loss": result.final_loss, "seconds": round(result.seconds, 1)})


@click.command("export-model")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=out_dir, help="Folder for merged/ and model-*.gguf.")
@click.option("--quant", "quants", multiple=True, type=click.Choice(["q8_0", "q4_k_m"]),
              default=("q8_0", "q4_k_m"), show_default=True, help="Quantized types to write (repeatable).")
@click.option("--check", "check_file", type=existing_file, default=None,
              help="SFT JSONL whose prompts measure agreement of each GGUF with the merged model.")
@click.option("--check-n", type=int, default=50, show_default=True, help="Prompts to compare.")
@click.option("--base", type=existing_path, default=None,
              help="Base the adapter was trained on (default: the run's train_info.json).")
def export_model(adapter: Path, out: Path, quants: tuple[str, ...], check_file: Path | None, check_n: int,
                 base: Path | None) -> None:
    """Merge ADAPTER (a train run's adapter/ folder, or one of its checkpoints) into its base, convert to GGUF with llama.cpp's
    converter, quantize with llama.cpp's quantizer, and report the agreement of each file's
    greedy answers with the merged PyTorch model."""
    from ..llm.export import export_model as run_export
    from ..llm.sft import read_jsonl

    prompts = [r["prompt"] for r in read_jsonl(check_file)[:check_n]] if check_file else []
    _echo_json(run_export(adapter, out, quants, prompts, base).as_dict())


def score_model_on_text(model_gguf: str | Path, csv_file: str | Path, split: str = "val",
                        n_threads: int = 1, limit: int | None = None) -> Report:
    """Score a GGUF model on a labelled OCR CSV (split: 'train', 'val' or 'all' of the shared
    fixed-seed split), prompts built as for training, rule candidates included when available."""
    from ..llm.infer import predict_texts
    from ..llm.sft import extractor_candidates, prompt_for, read_labeled_csv, split_rows

    rows = read_labeled_csv(csv_file)
    if split != "all":
        rows = dict(zip(("train", "val"), split_rows(rows)))[split]
    rows = rows[:limit] if limit else rows
    cands = extractor_candidates()
    items = [(r.entity, prompt_for(r.entity, r.ocr_text, r.group_id, cands)) for r in rows]
    answers = predict_texts(str(model_gguf), items, n_threads=n_threads)
    return score((r.entity, r.label, a) for r, a in zip(rows, answers))  # the metric reads labels leniently


COMMANDS = [tiny_model, sft_data, train, export_model]
