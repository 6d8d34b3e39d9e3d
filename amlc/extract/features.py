"""Features of one candidate for one entity: what makes it the answer rather than another number.

Every feature is a named float; the model file holds one weight per name, so a feature that was
never seen in training simply weighs nothing. Names ending in ':<entity>' are entity-specific
(where the entities disagree: the first of '10 x 20 x 30' is a width, the last a height).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal
from typing import Sequence

from ..units import ENTITY_UNITS
from .candidates import AMBIGUOUS_UNITS, QUOTE_UNITS, Candidate
from .priors import Priors

KEYWORDS: dict[str, str] = {
    "item_weight": r"net\.?\s*w(?:eigh)?t|nett?o?|weight|wt|peso|poids|gewicht|inhalt|contenu|gross",
    "maximum_weight_recommendation": r"max(?:imum)?|load|capacity|up\s*to|holds?|supports?|bearing|"
                                     r"carry|rated",
    "height": r"height|high|tall|\bh\b|\bht\b|hauteur|höhe",
    "width": r"width|wide|\bw\b|breadth|largeur|breite",
    "depth": r"depth|deep|\bd\b|length|long|\bl\b|thick(?:ness)?|profondeur|tiefe",
    "voltage": r"voltage|input|output|rated|\bac\b|\bdc\b|battery",
    "wattage": r"power|wattage|output|rated|max|consumption",
    "item_volume": r"volume|capacity|net|contents?|vol\b|inhalt",
}
KEYWORD_RES = {e: re.compile(p, re.IGNORECASE) for e, p in KEYWORDS.items()}
SIBLINGS = {"height": ("width", "depth"), "width": ("height", "depth"), "depth": ("height", "width"),
            "item_weight": ("maximum_weight_recommendation",),
            "maximum_weight_recommendation": ("item_weight",),
            "voltage": (), "wattage": (), "item_volume": ()}
DIMENSIONS = ("height", "width", "depth")
KEYWORD_WINDOW = 30   # characters before a number searched for its keyword (about 4 words)

# How many base units (gram, millimetre, millilitre, volt, watt) one unit is; for ranking sizes.
SCALE = {"centimetre": 10, "foot": 304.8, "inch": 25.4, "metre": 1000, "millimetre": 1, "yard": 914.4,
         "gram": 1, "kilogram": 1000, "microgram": 1e-6, "milligram": 1e-3, "ounce": 28.35,
         "pound": 453.6, "ton": 1e6, "kilovolt": 1000, "millivolt": 1e-3, "volt": 1,
         "kilowatt": 1000, "watt": 1, "centilitre": 10, "cubic foot": 28317, "cubic inch": 16.39,
         "cup": 240, "decilitre": 100, "fluid ounce": 29.57, "gallon": 3785, "imperial gallon": 4546,
         "litre": 1000, "microlitre": 1e-3, "millilitre": 1, "pint": 473, "quart": 946}


def allowed(candidates: Sequence[Candidate], entity: str) -> list[Candidate]:
    units = ENTITY_UNITS[entity]
    return [c for c in candidates if c.unit in units]


def _keyword_before(text: str, cand: Candidate, entity: str) -> bool:
    window = text[max(0, cand.column - KEYWORD_WINDOW):cand.column]
    return bool(KEYWORD_RES[entity].search(window))


def _size(c: Candidate) -> float:
    return float(c.value) * SCALE.get(c.unit, 1.0)


def _box_features(cand: Candidate, heights: list[float]) -> dict[str, float]:
    """Text size and orientation, when the OCR gave boxes (the shared text has none)."""
    if not cand.box or not heights:
        return {}
    xs = [p[0] for p in cand.box]
    ys = [p[1] for p in cand.box]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    median = sorted(heights)[len(heights) // 2] or 1.0
    return {"box_rel_size": math.log(max(min(width, height), 1e-3) / median),
            "box_vertical": float(height > 1.5 * width)}


def _line_heights(candidates: Sequence[Candidate]) -> list[float]:
    out = []
    for c in candidates:
        if c.box:
            xs, ys = [p[0] for p in c.box], [p[1] for p in c.box]
            out.append(min(max(xs) - min(xs), max(ys) - min(ys)))
    return out


def featurize(candidates: Sequence[Candidate], entity: str, group: str | None,
              priors: Priors) -> list[dict[str, float]]:
    """Features for each candidate (all already allowed for the entity)."""
    n = len(candidates)
    counts = Counter((c.value, c.unit) for c in candidates)
    sizes = [_size(c) for c in candidates]
    biggest, smallest = max(sizes, default=0), min(sizes, default=0)
    heights = _line_heights(candidates)
    out = []
    for i, c in enumerate(candidates):
        f: dict[str, float] = {
            "bias_in_text": 1.0,
            "unit_logp": priors.unit_logp(entity, c.unit),
            "group_unit_logp": priors.group_unit_logp(entity, group, c.unit),
            "value_logp": priors.value_logp(entity, c.unit, c.value),
            "repeats": math.log(counts[(c.value, c.unit)]),
            "order": i / (n - 1) if n > 1 else 0.0,
            "first": float(i == 0),
            "last": float(i == n - 1 and n > 1),
            "keyword": float(_keyword_before(c.line_text, c, entity)),
            "keyword_sibling": float(any(_keyword_before(c.line_text, c, s) for s in SIBLINGS[entity])),
            "range_high": float(c.range_role == "high"),
            "range_low": float(c.range_role == "low"),
            "ambiguous_unit": float(c.surface.lower().strip(".") in AMBIGUOUS_UNITS),
            "quote_unit": float(c.surface in QUOTE_UNITS),
            "slipped": float(c.slipped),
            "inherited_unit": float(c.inherited_unit),
            "fraction": float(c.fraction),
            "zero": float(c.value == 0),
            "integer": float(c.value == c.value.to_integral_value()),
            "ocr_confidence": c.confidence - 1.0,
            f"largest:{entity}": float(n > 1 and sizes[i] == biggest),
            f"smallest:{entity}": float(n > 1 and sizes[i] == smallest),
        }
        if c.tag:
            f["tag_match" if c.tag == entity else "tag_other"] = 1.0
        if c.chain_size > 1 and entity in DIMENSIONS:
            f[f"chain{c.chain_index}of{c.chain_size}:{entity}"] = 1.0
        elif c.chain_size > 1:
            f["in_chain"] = 1.0
        f.update(_box_features(c, heights))
        out.append(f)
    return out
