"""The model chooses among the rules' candidates, and rules and model answer together.

Per row, the rules' ranker gives its distinct candidate answers, written as the labels write them,
each with its probability (`rule_options`). The model scores each one: the log-probability that
it writes exactly that answer after the prompt (`score.py`), so a small model never has to write
a number, only to prefer one. The combined answer maximises

    log p_rules(answer) + weight * log p_model(answer | the row's options)

where `weight` is fitted on labelled rows the model was not trained on (`fit_weight`): 0 is the
rules alone, a large weight the model alone. A row without candidates has nothing to choose from;
there the model writes an answer under its entity's grammar (the fallback, `score_item`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..metric import classify_error
from ..units import Answer
from .grammar import CHOICE_RE, choice_grammar
from .prompt import ANSWER_PREFIX, CHOICES, answer_text, build_prompt

# Weights tried by fit_weight; ties go to the smaller weight (the rules are the cheaper opinion).
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)
DEFAULT_WEIGHT = 1.0  # used when a model has no fitted weight beside it


@dataclass(frozen=True)
class Options:
    """A row's candidate answers as the labels write them, the rules' most probable first."""

    answers: tuple[str, ...]
    rule_logp: tuple[float, ...]  # the ranker's log-probability of each answer
    rules: str = ""               # the rules' own answer ('' when they abstain)


@dataclass(frozen=True, order=True)
class ChoiceItem:
    """What a model worker is given for one row: the prompt and the answers it chooses among."""

    entity: str
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Scored:
    """A model worker's reply: its log-probability of each answer, or, for a row without answers
    (or a prompt too long to score), the answer it wrote under the entity's grammar."""

    logp: tuple[float, ...] | None
    written: str = ""


def label_form(answer: Answer, entity: str, group: str | None, priors: Any) -> str:
    """The answer as the labels of this entity, unit and group write it ('21.0 centimetre')."""
    return answer.label_text(priors.whole_number_bare(entity, answer.unit, group or None))


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def rule_options(extractor: Any, entity: str, ocr: Any, group: str | None, k: int = CHOICES) -> Options:
    """The rules' k most probable distinct answers for a row (ocr: its text or its OCR lines),
    each answer's probability summed over its mentions, as the ranker does."""
    prediction = extractor.predict(entity, ocr, group or None)
    mentions: dict[str, list[float]] = {}
    for cand in prediction.candidates:
        text = label_form(Answer(cand.value, cand.unit), entity, group, extractor.priors)
        mentions.setdefault(text, []).append(cand.score)
    if not mentions:
        return Options((), (), prediction.text())
    norm = _logsumexp([extractor.model.none_score] + [s for scores in mentions.values() for s in scores])
    ranked = sorted(((_logsumexp(s) - norm, text) for text, s in mentions.items()), key=lambda p: -p[0])[:k]
    return Options(tuple(t for _, t in ranked), tuple(lp for lp, _ in ranked), prediction.text())


def _normalised(logp: Sequence[float]) -> list[float]:
    norm = _logsumexp(logp)
    return [v - norm for v in logp]


def combine(options: Options, model_logp: Sequence[float] | None, weight: float) -> str:
    """The answer maximising rules log-probability + weight x the model's (over the options);
    the rules' answer when the model gave no scores."""
    if not options.answers or model_logp is None:
        return options.rules
    model = _normalised(model_logp)
    best = max(range(len(options.answers)), key=lambda i: (options.rule_logp[i] + weight * model[i], -i))
    return options.answers[best]


def model_choice(options: Options, scored: Scored) -> str:
    """The model's own answer: its most probable option, or what it wrote where it had none."""
    if scored.logp is None:
        return scored.written
    return options.answers[max(range(len(scored.logp)), key=lambda i: (scored.logp[i], -i))]


def combined_answer(options: Options, scored: Scored, weight: float) -> str:
    """Rules and model together; where the rules have no candidate, the model's written answer."""
    if scored.logp is None:
        return options.rules or scored.written
    return combine(options, scored.logp, weight)


def fit_weight(rows: Sequence[tuple[str, str, Options, Scored]], weights: Sequence[float] = WEIGHTS
               ) -> tuple[float, dict[float, int]]:
    """The weight whose combined answers are right most often on (entity, truth, options, scored)
    rows, and the count of right answers per weight tried."""
    right = {w: sum(classify_error(entity, truth, combined_answer(options, scored, w)) is None
                    for entity, truth, options, scored in rows) for w in weights}
    best = max(weights, key=lambda w: (right[w], -w))
    return best, right


def score_item(engine: Any, item: ChoiceItem) -> Scored:
    """One row through an engine (amlc.llm.infer.LlamaEngine): options scored, or an answer written."""
    from .score import continuation_logprobs

    if item.answers:
        logp = continuation_logprobs(engine.llm, item.prompt, _continuations(item))
        if logp is not None:
            return Scored(tuple(logp))
    return Scored(None, engine.answer(item.entity, item.prompt))


def score_items(engine: Any, items: Sequence[ChoiceItem]) -> list[Scored]:
    """Rows through an engine, as score_item answers them: where the engine takes rows
    together, the options scored in batches (amlc.llm.batch_score, the same scores) and the rows
    without options written together (amlc.llm.parallel); what does not fit, one by one."""
    together = len(items) > 1 and engine.scorer is not None
    logps = engine.scorer.score([(item.prompt, _continuations(item)) for item in items]) if together \
        else [None] * len(items)
    out: list[Scored | None] = [None if logp is None else Scored(tuple(logp)) for logp in logps]
    free = [i for i, item in enumerate(items) if not item.answers]
    for i, written in zip(free, engine.answer_together([(items[i].entity, items[i].prompt) for i in free])):
        out[i] = Scored(None, written)
    return [scored or score_item(engine, item) for scored, item in zip(out, items)]


def _continuations(item: ChoiceItem) -> list[str]:
    return [ANSWER_PREFIX + a for a in item.answers]


def writable(answers: Sequence[str]) -> list[str]:
    """The options a choice grammar can list: a barcode read as '22122020000174 gram' is a
    candidate of the rules, but no label's number, and no grammar's."""
    return [a for a in answers if CHOICE_RE.fullmatch(a)]


def grammar_choice(engine: Any, item: ChoiceItem) -> Scored:
    """The model's greedy answer under the row's choice grammar (one of its options, or a blank);
    where the row has no options, its answer under the entity's grammar."""
    import llama_cpp

    answers = writable(item.answers)
    if not answers:
        return Scored(None, engine.answer(item.entity, item.prompt))
    grammar = llama_cpp.LlamaGrammar.from_string(choice_grammar(answers), verbose=False)
    return Scored(None, answer_text(engine.generate(item.prompt, grammar=grammar)))


def choice_item(extractor: Any, entity: str, ocr_text: str, group: str | None, lines: Sequence[Any] = ()
                ) -> tuple[Options, ChoiceItem]:
    """A row's options (ranked on its OCR lines with boxes where known, as `amlc run` does) and
    the model's item, its prompt built from the text as in training."""
    options = rule_options(extractor, entity, lines or ocr_text, group)
    prompt = build_prompt(entity, ocr_text, options.answers if ocr_text else None)
    return options, ChoiceItem(entity, prompt, options.answers)


def weight_path(model_path: str | Path) -> Path:
    """Where a model's fitted weight is kept: beside it, `<model>.choice.json`."""
    path = Path(model_path)
    return path.with_name(path.stem + ".choice.json")


def save_weight(model_path: str | Path, weight: float, right: dict[float, int], rows: int) -> Path:
    path = weight_path(model_path)
    path.write_text(json.dumps({"weight": weight, "rows": rows,
                                "right_per_weight": {str(w): n for w, n in right.items()}}, indent=2))
    return path


def load_weight(model_path: str | Path) -> float:
    """The weight fitted for this model, or DEFAULT_WEIGHT when none was."""
    path = weight_path(model_path)
    return float(json.loads(path.read_text())["weight"]) if path.exists() else DEFAULT_WEIGHT
