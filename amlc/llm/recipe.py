"""The LLM recipe end to end, rerunnable with one command (`amlc llm-bench`):

1. SFT rows from ocr_labeled.csv and from a store of labelled photos read by `amlc run`
   (PP-OCRv6 lines with boxes): the training half less a fit share -> train.jsonl, the fit share
   -> fit.jsonl, the validation half -> val.jsonl (sft.build_sft_files);
2. LoRA on the base (a time-budgeted config on a CPU), its learning curve printed;
3. merge and export to GGUF Q8_0;
4. the rules+model weight fitted on the fit rows (never trained on), saved beside the model;
   training and fit rows get their options from out-of-fold rankers (the shipped ranker learned
   from them), validation rows from the shipped ranker, as new rows would;
5. the table: rules / model / rules+model on the validation halves of the text and the photos,
   F1 numeric and strict, seconds per answer.

Each step is skipped when its output exists (training resumes from its newest checkpoint), so an
interrupted run continues where it stopped; everything lands under one folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from functools import cache
from typing import Any, Callable, Sequence

from ..extract.data import OCR_LABELED, TextRow, in_validation, read_store_rows, read_text_rows, split_rows
from .choice import DEFAULT_WEIGHT, fit_weight, grammar_choice, load_weight, save_weight, weight_path
from .compare import RowAnswers, answer_rows
from .origin import data_origin, write_origin
from .quiet import own
from .sft import build_sft_files, held_out_for_fit, write_jsonl

QUANT = "q8_0"


@dataclass(frozen=True)
class Step:
    """Where a recipe run keeps its parts."""

    sft: Path
    run: Path
    export: Path
    model: Path

    @classmethod
    def under(cls, out: Path) -> "Step":
        return cls(out / "sft", out / "run", out / "export", out / "export" / f"model-{QUANT}.gguf")


def labelled_rows(text_csv: Path | None, photos_store: Path | None, ocr_engine: str = "rapidocr"
                  ) -> dict[str, list[TextRow]]:
    """The labelled rows per source: 'text' (a labelled OCR CSV) and 'photos' (a store's
    labelled samples with the OCR lines `amlc run` read)."""
    sources: dict[str, list[TextRow]] = {}
    if text_csv:
        sources["text"] = read_text_rows(text_csv)
    if photos_store:
        sources["photos"] = read_store_rows(photos_store, ocr_engine)
    return sources


def _say(message: str) -> None:
    print(message, file=own(1), flush=True)


def options_source(extractor: Any, sources: dict[str, list[TextRow]]) -> Callable[[TextRow], Any]:
    """Whose options a row gets: a training-half row the out-of-fold ranker's that never learned
    from it (amlc.extract.fit.out_of_fold: the shipped ranker learned from every training-half
    row, so its options there are better than anywhere else); a validation row the shipped one's."""
    from ..extract.fit import out_of_fold

    _say("fitting 5 out-of-fold rankers for the training rows' options ...")
    oof = out_of_fold([r for rows in sources.values() for r in split_rows(rows)[0]], extractor.priors)
    return lambda row: extractor if in_validation(row) else oof.extractor(row)


def build_data(step: Step, sources: dict[str, list[TextRow]], options_from: Callable[[], Any],
               origin: dict[str, Any]) -> dict[str, int]:
    if not (step.sft / "val.jsonl").exists():
        counts = build_sft_files(list(sources.values()), step.sft, extractor_for=options_from())
        write_origin(step.sft, origin)
        (step.sft / "counts.json").write_text(json.dumps(counts))
    return json.loads((step.sft / "counts.json").read_text())


def train_model(step: Step, base: Path, config_name: str) -> Path:
    from .lora import format_curve, load_config, read_info, train

    adapter = step.run / "adapter"
    if not adapter.exists():
        config = load_config(config_name)
        result = train(base, step.sft / "train.jsonl", step.run, config, resume=True,
                       eval_data=step.sft / "fit.jsonl")
        _say(f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.backend})")
    _say("learning curve (held-out: the first fit rows, never trained on):")
    _say(format_curve(read_info(step.run)["curve"]))
    return adapter


def export_model(step: Step, adapter: Path) -> Path:
    from .gguf import export_model as run_export

    if not step.model.exists():
        run_export(adapter, step.export, kinds=(QUANT,))
    return step.model


def fit(step: Step, engine: Any, options_from: Callable[[], Any], rows: Sequence[TextRow]) -> float:
    """The rules+model weight, fitted on the fit rows (options out of fold) and saved beside the model."""
    if not weight_path(step.model).exists():
        answers = answer_rows(engine, None, rows, "fit rows", extractor_for=options_from())
        write_jsonl(answers.records(), step.model.parent / "scores-fit.jsonl")
        weight, right = fit_weight(answers.fit_rows())
        save_weight(step.model, weight, right, len(rows))
        _say(f"rules+model weight {weight} (right answers per weight on {len(rows)} fit rows: {right})")
    return load_weight(step.model)


def table_rows(name: str, answers: RowAnswers, weight: float, grammar: RowAnswers | None) -> list[dict]:
    """One line per way of answering: F1 numeric, strict, test-mix weighted, seconds per answer.
    Beside the fitted weight, the default one, fixed beforehand (a reference, not tuned here)."""
    n = len(answers.rows)
    rules_s = answers.rules_seconds / n
    model_s = sum(answers.seconds) / n
    ways = [("rules", answers.rules(), rules_s), ("model, scores the options", answers.model(), rules_s + model_s),
            (f"rules+model (fitted weight {weight:g})", answers.combined(weight), rules_s + model_s)]
    if weight != DEFAULT_WEIGHT:
        ways.append((f"rules+model (default weight {DEFAULT_WEIGHT:g})", answers.combined(DEFAULT_WEIGHT),
                     rules_s + model_s))
    if grammar is not None:
        ways.insert(2, ("model, choice grammar", grammar.model(), rules_s + sum(grammar.seconds) / n))
    out = []
    for way, predictions, seconds in ways:
        report = answers.report(predictions)
        out.append({"rows": name, "n": n, "answers from": way, "f1": report.f1, "f1_strict": report.strict.f1,
                    "f1_test_mix": report.weighted()[0].f1, "seconds_per_answer": seconds})
    return out


def coverage(answers: RowAnswers) -> dict[str, int]:
    """How many rows have the truth among their options, and how the rows without options fared."""
    from ..metric import classify_error

    rows = list(zip(answers.rows, answers.options, answers.model()))
    return {"rows": len(rows),
            "truth_in_options": sum(any(classify_error(r.entity, r.truth, a) is None for a in o.answers)
                                    for r, o, _ in rows),
            "without_options": sum(not o.answers for _, o, _ in rows),
            "without_options_model_right": sum(not o.answers and classify_error(r.entity, r.truth, m) is None
                                               for r, o, m in rows)}


def format_table(lines: list[dict]) -> str:
    head = f"{'rows':8} {'n':>5}  {'answers from':34} {'F1':>6} {'strict':>6} {'test mix':>8} {'s/answer':>9}"
    body = [f"{r['rows']:8} {r['n']:>5}  {r['answers from']:34} {r['f1']:>6.3f} {r['f1_strict']:>6.3f} "
            f"{r['f1_test_mix']:>8.3f} {r['seconds_per_answer']:>9.4f}" for r in lines]
    return "\n".join([head, "-" * len(head), *body])


def run(out: Path, base: Path, config_name: str = "smollm2_cpu", text_csv: Path | None = OCR_LABELED,
        photos_store: Path | None = None, threads: int = 1, grammar: bool = True, limit: int | None = None) -> dict:
    """The whole recipe (see the module's doc); returns and writes OUT/bench.json."""
    from ..extract import Extractor
    from .infer import load_llama

    step = Step.under(out)
    started = time.time()
    sources = labelled_rows(text_csv, photos_store)
    extractor = Extractor.load()
    options_from = cache(lambda: options_source(extractor, sources))  # fitted only when needed
    splits = sorted({r.source for r in sources.get("photos", ())})
    origin = data_origin([text_csv] if text_csv else [], photos_store, splits, seed=0)
    _say("SFT rows: " + json.dumps(build_data(step, sources, options_from, origin)))
    model = export_model(step, train_model(step, base, config_name))
    engine = load_llama(str(model), n_threads=threads)
    halves = {name: split_rows(rows) for name, rows in sources.items()}
    weight = fit(step, engine, options_from, [r for train, _ in halves.values() for r in train if held_out_for_fit(r)])
    lines, cover = [], {}
    for name, (_, val) in halves.items():
        val = val[:limit] if limit else val
        answers = answer_rows(engine, extractor, val, f"{name} val: score")
        write_jsonl(answers.records(), out / f"scores-{name}-val.jsonl")
        by_grammar = answer_rows(engine, extractor, val, f"{name} val: grammar", grammar_choice) if grammar else None
        lines += table_rows(name, answers, weight, by_grammar)
        cover[name] = coverage(answers)
    result = {"model": str(model), "weight": weight, "table": lines, "coverage": cover,
              "minutes": round((time.time() - started) / 60, 1)}
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    _say(format_table(lines))
    for name, c in cover.items():
        _say(f"{name}: truth among the options in {c['truth_in_options']}/{c['rows']} rows; "
             f"{c['without_options']} rows without options, the model's written answer right in "
             f"{c['without_options_model_right']}")
    return result
