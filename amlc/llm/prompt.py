"""Prompts for the text-to-answer model and their completions.

A prompt names the entity, the rules' candidate answers (when any, written as the labels write
them) and the OCR fragments most likely to hold the answer. The allowed units are not listed:
the candidates carry them, and the grammars in `grammar.py` enforce them, so the prompt stays
short (its length is what training and scoring cost). The completion is `" " + answer`: the
leading space is its own token for the tokenizers we use (digits and spaces split apart), so the
prompt, which ends on `answer:`, always ends on a token boundary, and the grammars start with it.
"""

from __future__ import annotations

import re
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

from ..units import UNIT_ALIASES, check_entity

ANSWER_PREFIX = " "  # completion = ANSWER_PREFIX + str(answer); grammar.py matches it
PROMPT_END = "answer:"
FRAGMENT_WORDS = 8  # OCR text without line breaks is cut into windows of this many words
DEFAULT_TOKEN_BUDGET = 120  # estimated tokens of OCR text per prompt
CHOICES = 4  # rule candidates per prompt: the answers the model chooses among

Item = TypeVar("Item", bound=Hashable)
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"[a-zA-Zµ\"']+")
_UNIT_WORDS = frozenset(UNIT_ALIASES) - {"t"}  # a lone 't' is too common a word to mark a unit


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (digits are single tokens, words ~4 chars) for budgets."""
    return len(_DIGIT.findall(text)) + len(text) // 4 + 1


def fragments(ocr_text: str, words: int = FRAGMENT_WORDS) -> list[str]:
    """OCR lines; a line longer than `words` words is cut into windows so budgets bite evenly."""
    out: list[str] = []
    for line in ocr_text.splitlines():
        tokens = line.split()
        out += [" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words)]
    return out


def fragment_rank(fragment: str) -> int:
    """0: a number and a unit word, 1: a number, 2: anything else (kept only if budget allows)."""
    if not _DIGIT.search(fragment):
        return 2
    lowered = fragment.lower()
    has_unit = any(w in _UNIT_WORDS for w in _WORD.findall(lowered)) or bool(
        re.search(r"\d\s*(cm|mm|kg|g|ml|l|v|w|oz|lb|lbs|in|ft|\"|')\b", lowered))
    return 0 if has_unit else 1


def select_fragments(ocr_text: str, budget: int = DEFAULT_TOKEN_BUDGET,
                     count: Callable[[str], int] = estimate_tokens) -> list[str]:
    """The fragments that matter most, best rank first (text order within a rank), within budget."""
    ranked = sorted(enumerate(fragments(ocr_text)), key=lambda p: (fragment_rank(p[1]), p[0]))
    chosen: list[str] = []
    used = 0
    for _, fragment in ranked:
        cost = count(fragment) + 1
        if used + cost > budget:
            continue
        chosen.append(fragment)
        used += cost
    return chosen


def build_prompt(entity: str, ocr_text: str, candidates: Sequence[str] | None = None,
                 budget: int = DEFAULT_TOKEN_BUDGET, count: Callable[[str], int] = estimate_tokens) -> str:
    """The model's input for one row; ends with PROMPT_END, no trailing space."""
    check_entity(entity)
    lines = [f"entity: {entity}"]
    if candidates:
        lines.append("candidates: " + " | ".join(candidates[:CHOICES]))
    lines.append("text: " + " | ".join(select_fragments(ocr_text, budget, count)))
    lines.append(PROMPT_END)
    return "\n".join(lines)


def completion(answer: str) -> str:
    """The target text: the leading space then the answer; an abstention ('') is empty."""
    return ANSWER_PREFIX + answer if answer else ""


def answer_text(generated: str) -> str:
    """A generated completion back to a submission cell (strip the leading space)."""
    return generated.strip()


def unique_items(items: Iterable[Item]) -> tuple[list[Item], list[int]]:
    """Distinct items (e.g. (entity, prompt) pairs) and, per input item, the index of its distinct one."""
    seen: dict[Item, int] = {}
    index = [seen.setdefault(item, len(seen)) for item in items]
    return list(seen), index
