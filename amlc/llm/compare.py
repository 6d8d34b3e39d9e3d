"""Answers of rules, model and both for labelled rows, as the predict stage gives them.

Each row goes through the same steps as in the store: the rules' options (`choice.rule_options`,
on the OCR lines with boxes when the row has them), the prompt built from them, the model's score
of each option (`choice.score_item`), then the model's own choice and the combined answer. The
model's time per row is kept, so costs are reported beside scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..extract.data import TextRow
from ..metric import Report, score
from .choice import ChoiceItem, Options, Scored, choice_item, combined_answer, model_choice, score_item
from .progress import Progress


@dataclass
class RowAnswers:
    """Per row: the rules' options and answer, the model's scores, and the model's seconds."""

    rows: list[TextRow]
    options: list[Options] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    rules_seconds: float = 0.0

    def rules(self) -> list[str]:
        return [o.rules for o in self.options]

    def model(self) -> list[str]:
        return [model_choice(o, s) for o, s in zip(self.options, self.scored)]

    def combined(self, weight: float) -> list[str]:
        return [combined_answer(o, s, weight) for o, s in zip(self.options, self.scored)]

    def report(self, answers: Sequence[str]) -> Report:
        return score((r.entity, r.truth, a) for r, a in zip(self.rows, answers))

    def fit_rows(self) -> list[tuple[str, str, Options, Scored]]:
        return [(r.entity, r.truth, o, s) for r, o, s in zip(self.rows, self.options, self.scored)]

    def records(self) -> list[dict]:
        """Per row, what was scored (to rescore any other way offline): JSON-ready dicts."""
        return [{"entity": r.entity, "truth": r.truth, "image_link": r.image_link, "answers": o.answers,
                 "rule_logp": o.rule_logp, "rules": o.rules, "model_logp": s.logp, "written": s.written,
                 "seconds": t} for r, o, s, t in zip(self.rows, self.options, self.scored, self.seconds)]


def answer_rows(engine: Any, extractor: Any, rows: Sequence[TextRow], description: str = "score",
                reply: Callable[[Any, ChoiceItem], Any] = score_item,
                extractor_for: Callable[[TextRow], Any] | None = None) -> RowAnswers:
    """Every row through rules and model (engine: amlc.llm.infer.LlamaEngine), with a progress line.
    `reply` is what the model does with a row: score its options (default) or anything else that
    takes (engine, item). `extractor_for(row)`, when given, names each row's rules instead of
    `extractor` (out-of-fold rankers for training rows)."""
    out = RowAnswers(list(rows))
    with Progress(description, len(rows), unit="rows") as progress:
        for row in rows:
            started = time.perf_counter()
            rules = extractor_for(row) if extractor_for else extractor
            options, item = choice_item(rules, row.entity, row.ocr_text, row.group_id, row.lines)
            ruled = time.perf_counter()
            out.options.append(options)
            out.scored.append(reply(engine, item))
            out.seconds.append(time.perf_counter() - ruled)
            out.rules_seconds += ruled - started
            progress.advance()
    return out


def model_fn(model_gguf: str, total: int, threads: int = 1) -> Callable[[TextRow], str]:
    """A row's answer from a GGUF model as the predict stage gives it (its choice among the rules'
    options, or its written answer where there are none), with progress over `total` rows."""
    from ..extract import Extractor
    from .infer import load_llama

    engine, extractor = load_llama(model_gguf, n_threads=threads), Extractor.load()
    progress = Progress("model", total, unit="rows").start()

    def answer(row: TextRow) -> str:
        options, item = choice_item(extractor, row.entity, row.ocr_text, row.group_id, row.lines)
        progress.advance()
        return model_choice(options, score_item(engine, item))
    return answer
