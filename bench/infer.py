"""Answer throughput of the LLM stage through `amlc predict`: workers and rows taken together
(--llm-batch) against a bare llama-cpp-python loop, on the same rows and model.

    python bench/infer.py --model M.gguf [--n 120] [--workers 1,2] [--batches 1] [--cache DIR]
    python bench/infer.py --model M.gguf --workers 1 --batches 1,8,32     # rows scored together

Rows: the first N rows of ../shared/data/photos.csv (real labelled product photos), read by amlc
itself once into a template work folder (`amlc run --local-images`: fetch, OCR, rules). Each
contender answers the same rows:
  amlc predict, K workers, batch B
                           `amlc predict --model M --llm-workers K --llm-batch B` as a subprocess
                           on a fresh copy of the template, timed whole; its start-up (the same
                           command on the finished copy: models load, nothing to answer) is printed
                           apart; its stored answers are compared with the first contender's;
  in-process loop          one llama.cpp engine (one thread) in this process doing a worker's work
                           row after row: the rules' options scored by the model's log-likelihood
                           (its answer written under the entity's grammar where a row has none),
                           items built from the store as the stage builds them; no store writes,
                           pool, de-duplication or reordering.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from run import DATA, amlc, copy_store, machine, print_scaling, store_rows, timed_loop

DEFAULT_CACHE = Path("amlc-work/bench-infer")   # the template work folder, beside the others


def template(n: int, cache: Path) -> Path:
    """A work folder with the first n photos.csv rows fetched, OCR'd and answered by the rules."""
    folder = cache / f"template-{n}"
    if (folder / "ready").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines = (DATA / "photos.csv").read_text().splitlines()
    subset = folder / "photos.csv"
    subset.write_text("\n".join(lines[: n + 1]) + "\n")
    amlc(folder, "ingest", str(subset), "--split", "val")
    amlc(folder, "run", "--exit-when-done", "--no-dashboard", "--local-images", str(DATA / "photos"))
    (folder / "ready").touch()
    return folder


def choice_items(folder: Path) -> list:
    """Each sample's ChoiceItem (its prompt and the rules' options), built as the predict stage
    builds them: options ranked on the stored OCR lines with boxes."""
    from amlc.extract import Extractor
    from amlc.llm.choice import choice_item
    from amlc.ocr import OcrResult

    extractor = Extractor.load()
    rows = store_rows(folder, "SELECT s.entity, s.group_id, o.text, o.lines FROM samples s "
                              "JOIN ocr_results o ON o.image_id = s.image_id ORDER BY s.id")
    return [choice_item(extractor, entity, text or "", group, OcrResult.from_json(lines).lines if lines else ())[1]
            for entity, group, text, lines in rows]


def bare_loop(model: Path, items: list) -> tuple[float, float]:
    """(answers/s, CPU seconds per answer) of one llama.cpp engine in this process, one thread,
    after loading the model: each row's options scored (or its answer written) as a predict
    worker does, item after item, with no store, pool, de-duplication or reordering."""
    from amlc.llm.choice import score_item
    from amlc.llm.infer import load_llama

    engine = load_llama(str(model), n_threads=1, gpu_layers=0)
    return timed_loop(items, lambda item: score_item(engine, item))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a GGUF model")
    parser.add_argument("--n", type=int, default=120, help="rows of photos.csv (default 120)")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="--llm-workers to time (default 1,cores)")
    parser.add_argument("--batches", default="1", help="--llm-batch values to time with each worker count (default 1)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the template work folder is kept")
    args = parser.parse_args()
    folder = template(args.n, args.cache)
    items = choice_items(folder)
    print(f"{len(items)} rows of photos.csv, model {args.model.name}; {machine()}")

    rows, answers = [], []
    for workers in [int(w) for w in args.workers.split(",")]:
        for batch in [int(b) for b in args.batches.split(",")]:
            work = copy_store(folder, args.cache / "work")
            command = ["predict", "--model", str(args.model), "--no-dashboard", "--llm-workers", str(workers),
                       "--llm-batch", str(batch)]
            run = amlc(work, *command)
            rows.append((f"amlc predict, {workers} w, batch {batch}", workers, run, amlc(work, *command)))
            answers.append(stored_answers(work))
    bare = bare_loop(args.model, items)
    shutil.rmtree(args.cache / "work", ignore_errors=True)
    print_scaling(len(items), "answers", rows, bare, "one engine, in-process loop")
    for (name, *_), found in zip(rows[1:], answers[1:]):
        print(f"{name}: {agreement(answers[0], found)}")


def agreement(first: dict, found: dict) -> str:
    differ = sum(found.get(key) != answer for key, answer in first.items()) + len(found.keys() - first.keys())
    return (f"the {len(found)} stored answers are identical to the first row's" if not differ
            else f"{differ} of {len(first)} stored answers differ from the first row's")


def stored_answers(folder: Path) -> dict[tuple[int, str], str]:
    """Every answer the predict stage stored: (sample, source) -> answer."""
    return {(sample, source): answer for sample, source, answer in
            store_rows(folder, "SELECT sample_id, source, prediction FROM predictions WHERE source != 'rules'")}


if __name__ == "__main__":
    main()
