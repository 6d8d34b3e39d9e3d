"""Reference points for the extractor: the naive regex and the ceiling of what text can give."""

from __future__ import annotations

import re
from decimal import Decimal

from ..units import ENTITY_UNITS, UNIT_ALIASES, AnswerError, parse_label
from .candidates import find_numbers

_NAIVE_UNITS = "|".join(re.escape(k) for k in sorted(UNIT_ALIASES, key=len, reverse=True)
                        if k.isalpha() or " " in k)
NAIVE_RE = re.compile(rf"(\d+(?:\.\d+)?)\s*({_NAIVE_UNITS})\b", re.IGNORECASE)


def naive_prediction(entity: str, text: str) -> str:
    """The first '<number> <unit>' whose unit the entity allows: what a plain regex entry does."""
    for m in NAIVE_RE.finditer(text):
        unit = UNIT_ALIASES.get(m.group(2).lower())
        if unit in ENTITY_UNITS[entity]:
            return f"{Decimal(m.group(1)).normalize():f} {unit}"
    return ""


def truth_in_text(entity: str, truth: str, text: str) -> bool:
    """Whether the true number appears in the text at all (as any number, with or without
    a unit). Rows where it does not cannot be won from text."""
    try:
        want = parse_label(truth, entity).value
    except AnswerError:
        return False
    return any(n.value == want for n in find_numbers(text))
