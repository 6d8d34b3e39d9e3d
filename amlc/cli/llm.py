"""LLM commands: tiny-model, sft-data, train, export-model, llm-bench (registered by amlc.cli).

Also `score_model_on_text`, which scores a GGUF model on a labelled OCR CSV from Python.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from ..metric import Report
from .common import workdir

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

    from ..extract.data import read_text_rows, split_rows
    from ..llm.sft import to_records
    from ..llm.tiny import TinySpec, make_tiny_model

    train_rows, _ = split_rows(read_text_rows(csv_file or default_labeled_csv()))
    texts = [r["prompt"] + r["completion"] for r in to_records(train_rows)]
    spec = TinySpec() if steps is None else replace(TinySpec(), pretrain_steps=steps)
    _echo_json(make_tiny_model(directory, texts, spec))


@click.command("sft-data")
@click.option("--from", "csv_files", type=existing_file, multiple=True,
              help="Labelled OCR CSV (ocr_labeled.csv's columns); repeatable.")
@click.option("--split", "store_splits", multiple=True,
              help="The store's labelled samples of this split that have OCR text; repeatable.")
@click.option("--ocr-engine", default="rapidocr", show_default=True, help="Whose OCR text (with --split).")
@click.option("--out", "out", type=out_dir, required=True, help="Folder for train.jsonl, fit.jsonl and val.jsonl.")
@click.option("--seed", type=int, default=0, show_default=True, help="Split and resampling seed.")
@click.option("--train-size", type=int, default=None, help="Training rows after resampling (default: as many as in).")
@click.option("--candidates/--no-candidates", default=True, show_default=True,
              help="Put the rule extractor's candidate answers in the prompts.")
@click.pass_context
def sft_data(ctx: click.Context, csv_files: tuple[Path, ...], store_splits: tuple[str, ...], ocr_engine: str,
             out: Path, seed: int, train_size: int | None, candidates: bool) -> None:
    """Write SFT rows (TRL prompt/completion JSONL): the training half, less a share kept to fit
    the rules+model weight on (fit.jsonl), resampled toward the test set's entity mix
    (train.jsonl); the validation half as it is (val.jsonl). Rows come from labelled OCR CSVs
    (--from) and from the store (--split: labelled samples whose images were OCR'd, with the
    OCR lines and boxes the predict stage sees), or both.

    \b
    Examples:
      amlc sft-data --from ../shared/data/ocr_labeled.csv --out sft/
      amlc -w photos-work sft-data --from ../shared/data/ocr_labeled.csv --split train --out sft/
    """
    from ..extract.data import read_store_rows
    from ..llm.origin import data_origin, write_origin
    from ..llm.sft import build_sft_files

    if not csv_files and not store_splits:
        raise click.UsageError("give --from CSV and/or --split NAME")
    sources: list = list(csv_files)
    if store_splits:
        rows = read_store_rows(workdir(ctx).store, ocr_engine, store_splits)
        if not rows:
            raise click.ClickException(f"splits {', '.join(store_splits)} have no labelled samples "
                                       f"with {ocr_engine} OCR text")
        sources.append(rows)
    counts = build_sft_files(sources, out, seed=seed, train_size=train_size, use_candidates=candidates)
    write_origin(out, data_origin(csv_files, workdir(ctx).store if store_splits else None, store_splits, seed))
    _echo_json(counts)


@click.command("train")
@click.option("--base", required=True, type=existing_path, help="Base model: an HF folder or a .gguf file.")
@click.option("--data", required=True, type=existing_file, help="SFT JSONL (prompt/completion).")
@click.option("--out", "out", required=True, type=out_dir, help="Run folder: checkpoints/, adapter/, train_info.json.")
@click.option("--config", "config_file", default=None,
              help="Hyperparameters: a TOML file or a name in amlc/llm/configs (lora_cpu, lora_gpu, smollm2_cpu, lora_tiny).")
@click.option("--max-steps", type=int, default=None, help="Override the config's max_steps.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT/checkpoints.")
@click.option("--eval-data", type=existing_file, default=None,
              help="SFT JSONL of held-out rows (e.g. fit.jsonl): the config's eval_rows of them are "
                   "scored every eval_steps for the learning curve.")
def train(base: Path, data: Path, out: Path, config_file: str | None, max_steps: int | None, resume: bool,
          eval_data: Path | None) -> None:
    """LoRA fine-tune BASE on DATA: Unsloth when CUDA is present and it imports, else PEFT + TRL
    (decided at run time and recorded in OUT/train_info.json). Shows steps with rate, ETA and
    the latest losses while it runs, then the learning curve."""
    from ..llm.lora import format_curve, load_config, train as run_training

    config = load_config(config_file, max_steps=max_steps)
    with libraries_logged(out / "train.log"):
        result = run_training(base, data, out, config, resume=resume, eval_data=eval_data)
    click.echo(format_curve(result.curve))
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
    from ..llm.gguf import export_model as run_export
    from ..llm.sft import read_jsonl

    prompts = [r["prompt"] for r in read_jsonl(check_file)[:check_n]] if check_file else []
    with libraries_logged(out / "export.log"):
        result = run_export(adapter, out, quants, prompts, base)
    _echo_json(result.as_dict())


def score_model_on_text(model_gguf: str | Path, csv_file: str | Path, split: str = "val",
                        n_threads: int = 1, limit: int | None = None) -> Report:
    """Score a GGUF model's own answers on a labelled OCR CSV (split: 'train', 'val' or 'all' of
    the shared fixed-seed split), as the predict stage gives them: its choice among the rules'
    options, or its written answer where a row has none."""
    from ..extract import Extractor
    from ..extract.data import read_text_rows, split_rows
    from ..llm.compare import answer_rows
    from ..llm.infer import load_llama

    rows = read_text_rows(csv_file)
    if split != "all":
        rows = dict(zip(("train", "val"), split_rows(rows)))[split]
    rows = rows[:limit] if limit else rows
    answers = answer_rows(load_llama(str(model_gguf), n_threads=n_threads), Extractor.load(), rows)
    return answers.report(answers.model())


@click.command("llm-bench")
@click.option("--out", "out", type=out_dir, required=True,
              help="Folder for every part: sft/, run/, export/, bench.json (reruns skip what is there).")
@click.option("--base", type=existing_path, default=None,
              help="Base model, HF folder or .gguf (default: SmolLM2-135M-Instruct Q4_1 from bin/fetch-models).")
@click.option("--config", "config_name", default="smollm2_cpu", show_default=True,
              help="Training config: a TOML file or a name in amlc/llm/configs.")
@click.option("--text", "text_csv", type=existing_file, default=None,
              help="Labelled OCR CSV (default: the shared ocr_labeled.csv).")
@click.option("--photos-store", type=existing_file, default=None,
              help="A store (amlc.db) of labelled photos read by `amlc run`, e.g. photos.csv ingested and run.")
@click.option("--threads", type=int, default=1, show_default=True, help="llama.cpp threads when scoring.")
@click.option("--no-grammar", is_flag=True, help="Skip the choice-grammar column (it decodes every row again).")
@click.option("--limit", type=int, default=None, help="Score only the first N validation rows of each source.")
def llm_bench(out: Path, base: Path | None, config_name: str, text_csv: Path | None, photos_store: Path | None,
              threads: int, no_grammar: bool, limit: int | None) -> None:
    """The LLM recipe end to end: SFT rows from the labelled text and photos, LoRA training (its
    learning curve printed), Q8_0 export, the rules+model weight fitted on held-out training
    rows, then the table rules / model / rules+model (F1 numeric and strict, seconds per answer)
    on the validation halves. Every step is skipped when its output exists.

    \b
    Example:
      amlc llm-bench --out llm-bench/ --photos-store photos-work/amlc.db
    """
    from ..llm.gguf import cache_dir
    from ..llm.assets import fetch_smollm2
    from ..llm.recipe import run

    base = base or fetch_smollm2(cache_dir())
    with libraries_logged(out / "llm-bench.log"):
        run(out, base, config_name, text_csv or default_labeled_csv(), photos_store, threads,
            grammar=not no_grammar, limit=limit)


@contextmanager
def libraries_logged(log: Path) -> Iterator[None]:
    """The libraries' bars and logs to `log` (said once), amlc's own lines to the user."""
    from ..llm.quiet import output_to

    click.echo(f"libraries' output goes to {log}", err=True)
    with output_to(log):
        yield


COMMANDS = [tiny_model, sft_data, train, export_model, llm_bench]
