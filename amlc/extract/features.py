"""Features of one candidate for one entity: what makes it the answer rather than another number.

Every feature is a named float; the model file holds one weight per name, so a feature that was
never seen in training simply weighs nothing. Names ending in ':<entity>' are entity-specific
(where the entities disagree: the first of '10 x 20 x 30' is a width, the last a height).

Beside the words and numbers around a mention, two habits of the labels are features: which of
two equal quantities in different units the label takes ('6.2 in / 16 cm': pair_*, from the
group's unit shares, the order, the print size and the rest of the label's unit system; on a
photo these habits have weights of their own, '@photo'), which dimension is the larger in the
product group (order_habit, from train.csv's images labelled with two dimensions), and which
dimension a length's place on a drawing suggests (place_role_*: upright at the side, the height;
along the bottom, the width) and which way the drawn line beside it runs (guide_*).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..units import DIMENSIONS, ENTITY_UNITS, EQUIVALENT, SCALE
from .candidates import AMBIGUOUS_UNITS, QUOTE_UNITS, Candidate, bare_candidates, extract_candidates
from .priors import Priors

KEYWORDS: dict[str, str] = {
    "item_weight": r"net\.?\s*w(?:eigh)?t|\bn\.\s?w\b|nett?o?|weight|wt|peso|poids|gewicht|inhalt|contenu|contenido",
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
# Words around a number that is a part, a dose or a nutrient rather than the product's own
# measure: 'Serving size 30g', 'per 100g', 'Protein 11.2g', 'approx 20g', '230gsm'.
PART_CONTEXT_RE = re.compile(r"serving|portion|per\b|pro\b|each|approx|ca\.|calorie|kcal|fat|protein|"
                             r"carb|sugar|sodium|fibre|fiber|vitamin|dose|tablet|capsule|scoop|dv\b",
                             re.IGNORECASE)
# Gross weight (package included) and peak power are printed beside the measure the label takes.
GROSS_RE = re.compile(r"gross|\bg\.\s?w\b|peak|surge", re.IGNORECASE)
SIBLINGS = {"height": ("width", "depth"), "width": ("height", "depth"), "depth": ("height", "width"),
            "item_weight": ("maximum_weight_recommendation",),
            "maximum_weight_recommendation": ("item_weight",),
            "voltage": (), "wattage": (), "item_volume": ()}
BARE_UNITS = 2   # unit-less numbers are tried with the group's this many most usual units
KEYWORD_WINDOW = 30   # characters before a number searched for its keyword (about 4 words)


def allowed(candidates: Sequence[Candidate], entity: str) -> list[Candidate]:
    units = ENTITY_UNITS[entity]
    return [c for c in candidates if c.unit in units]


def entity_candidates(ocr: str | Sequence[Any], entity: str, group: str | None,
                      priors: Priors) -> tuple[list[Candidate], list[Candidate]]:
    """(candidates, mentions): the mentions whose unit the entity allows or, when there are
    none, the unit-less numbers with the unit the entity most often has in this group; and
    every number+unit mention in the text, whatever its unit."""
    mentions = extract_candidates(ocr)
    found = allowed(mentions, entity)
    if found:
        return found, mentions
    units = priors.top_units(entity, group, BARE_UNITS)
    bare = [c for unit in units for c in bare_candidates(ocr, unit)]
    return sorted(bare, key=lambda c: c.start), mentions   # stable: the usual unit first


def _metric_share(mentions: Sequence[Candidate]) -> float:
    """-1 (all imperial) .. 1 (all metric) over every unit written in the text; 0 if none."""
    if not mentions:
        return 0.0
    return 2 * sum(m.unit in METRIC for m in mentions) / len(mentions) - 1


def _keyword_before(text: str, cand: Candidate, entity: str) -> bool:
    window = text[max(0, cand.column - KEYWORD_WINDOW):cand.column]
    return bool(KEYWORD_RES[entity].search(window))


def _keyword_adjacent(text: str, cand: Candidate, entity: str) -> bool:
    """A keyword with no other number between it and this one ('Net wt 200g', not '5g net')."""
    window = text[max(0, cand.column - KEYWORD_WINDOW):cand.column]
    return bool(KEYWORD_RES[entity].search(re.split(r"\d", window)[-1]))


def _context_flags(c: Candidate) -> dict[str, float]:
    """What touches the number: letters glued to it, a percent sign, part/nutrient words."""
    text, start = c.line_text, c.column
    end = start + (c.end - c.start)
    before = text[max(0, start - KEYWORD_WINDOW):start]
    return {
        "glued_left": float(start > 0 and text[start - 1].isalpha()),
        "glued_right": float(c.bare and end < len(text) and text[end:end + 1].isalpha()),
        "percent_after": float("%" in text[end:end + 8]),
        "part_context": float(bool(PART_CONTEXT_RE.search(re.split(r"\d", before)[-1]))),
        "in_parentheses": float("(" in text[max(0, start - 2):start]),
    }


def _size(c: Candidate) -> float:
    return float(c.value) * SCALE.get(c.unit, 1.0)


def _box_extent(c: Candidate) -> tuple[float, float]:
    """(width, height) of the candidate's line box."""
    xs, ys = [p[0] for p in c.box or ()], [p[1] for p in c.box or ()]
    return (max(xs) - min(xs), max(ys) - min(ys)) if xs else (0.0, 0.0)


def _text_size(c: Candidate) -> float:
    """The size of the letters: the shorter side of the line box (lines run either way)."""
    return min(_box_extent(c))


def _box_features(cand: Candidate, heights: list[float], entity: str) -> dict[str, float]:
    """Text size and orientation, when the OCR gave boxes (the photos' PP-OCR lines do,
    ocr_labeled.csv's text does not)."""
    if not cand.box or not heights:
        return {}
    width, height = _box_extent(cand)
    median = sorted(heights)[len(heights) // 2] or 1.0
    return {"box_rel_size": math.log(max(_text_size(cand), 1e-3) / median),
            f"box_vertical:{entity}": float(height > 1.5 * width)}


def _line_heights(candidates: Sequence[Candidate]) -> list[float]:
    return [_text_size(c) for c in candidates if c.box]


METRIC = frozenset({"centimetre", "metre", "millimetre", "gram", "kilogram", "milligram", "microgram",
                    "millilitre", "litre", "centilitre", "decilitre", "microlitre"})


PAIR_REACH = 2      # an equal quantity in another unit is looked for this many mentions away


def _partners(candidates: Sequence[Candidate], sizes: list[float]) -> list[int | None]:
    """For each candidate, the nearest one that states the same size in another unit
    ('6.2 in / 16 cm', 'NET WT 56.70 g (2 oz)'), or None."""
    partners: list[int | None] = [None] * len(candidates)
    for i, c in enumerate(candidates):
        near = sorted(range(max(0, i - PAIR_REACH), min(len(candidates), i + PAIR_REACH + 1)),
                      key=lambda j: (abs(j - i), j))
        partners[i] = next((j for j in near if candidates[j].unit != c.unit and sizes[i] > 0
                            and abs(sizes[i] - sizes[j]) <= EQUIVALENT * sizes[i]), None)
    return partners


def _size_ranks(sizes: list[float]) -> tuple[list[int], int]:
    """Each size's rank among the distinct sizes (0 = largest), sizes within EQUIVALENT
    counting as one (so '48cm/18.9in' is one size), and how many distinct sizes there are."""
    distinct: list[float] = []
    for size in sorted(sizes, reverse=True):
        if not distinct or distinct[-1] - size > EQUIVALENT * distinct[-1]:
            distinct.append(size)
    ranks = [next(i for i, d in enumerate(distinct) if d - size <= EQUIVALENT * d) for size in sizes]
    return ranks, len(distinct)


@dataclass
class _TextView:
    """What featurize needs to know about all of a row's candidates at once."""
    n: int
    counts: Counter
    unit_counts: Counter
    ranks: list[int]
    n_sizes: int
    partners: list[int | None]
    heights: list[float]
    metric_share: float
    unpaired_metric_share: float   # the same over the mentions outside equal-quantity pairs
    places: dict[int, tuple[float, float]]   # size rank -> centre (x, y) of its boxes on the photo

    @classmethod
    def of(cls, candidates: Sequence[Candidate], mentions: Sequence[Candidate]) -> "_TextView":
        sizes = [_size(c) for c in candidates]
        ranks, n_sizes = _size_ranks(sizes)
        partners = _partners(candidates, sizes)
        paired = {c.start for c, j in zip(candidates, partners) if j is not None}
        return cls(len(candidates), Counter((c.value, c.unit) for c in candidates),
                   Counter(c.unit for c in candidates), ranks, n_sizes, partners,
                   _line_heights(candidates), _metric_share(mentions),
                   _metric_share([m for m in mentions if m.start not in paired]),
                   _size_places(candidates, ranks))


def _centre(box: Any) -> tuple[float, float]:
    return sum(p[0] for p in box) / len(box), sum(p[1] for p in box) / len(box)


def _size_places(candidates: Sequence[Candidate], ranks: list[int]) -> dict[int, tuple[float, float]]:
    """Where each distinct size stands on the photo: the mean centre of its candidates' boxes
    (one length printed twice, '6.4 in' over '16 cm', stands once, between the two)."""
    centres: dict[int, list[tuple[float, float]]] = {}
    for c, rank in zip(candidates, ranks):
        if c.box:
            centres.setdefault(rank, []).append(_centre(c.box))
    return {rank: (sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts))
            for rank, pts in centres.items()}


def _prior_features(c: Candidate, entity: str, group: str | None, priors: Priors) -> dict[str, float]:
    size_logp = priors.group_size_logp(entity, group, c.value, c.unit)
    f = {
        "unit_logp": priors.unit_logp(entity, c.unit),
        "group_unit_logp": priors.group_unit_logp(entity, group, c.unit),
        "value_logp": priors.value_logp(entity, c.unit, c.value),
        "group_size_logp": size_logp,
    }
    if SIBLINGS[entity]:
        f["sibling_contrast"] = size_logp - _mean_logp(
            priors.group_size_logp(s, group, c.value, c.unit) for s in SIBLINGS[entity])
    return f


def _mean_logp(logps: Iterable[float]) -> float:
    """log of the mean probability."""
    values = list(logps)
    return math.log(sum(math.exp(v) for v in values) / len(values))


def _keyword_line_before(c: Candidate, entity: str) -> bool:
    """The entity's keyword ends the line before, and nothing but the number starts this one
    ('NET WT.' above '250g' on a label read line by line)."""
    if not c.line_before or c.line_text[:c.column].strip():
        return False
    return bool(KEYWORD_RES[entity].search(re.split(r"\d", c.line_before)[-1][-KEYWORD_WINDOW:]))


def _mention_features(c: Candidate, entity: str) -> dict[str, float]:
    """How the mention is written, and the words before it."""
    return {
        "bias_in_text": 1.0,
        "keyword": float(_keyword_before(c.line_text, c, entity)),
        "keyword_adjacent": float(_keyword_adjacent(c.line_text, c, entity)),
        "keyword_line_before": float(_keyword_line_before(c, entity)),
        "keyword_near": float(any(KEYWORD_RES[entity].search(text) for text in c.near_lines)),
        "gross_before": float(bool(GROSS_RE.search(c.line_text[max(0, c.column - KEYWORD_WINDOW):c.column]))),
        "keyword_sibling": float(any(_keyword_before(c.line_text, c, s) for s in SIBLINGS[entity])),
        "range_high": float(c.range_role == "high"),
        "range_low": float(c.range_role == "low"),
        f"range_high:{entity}": float(c.range_role == "high"),
        f"range_low:{entity}": float(c.range_role == "low"),
        "ambiguous_unit": float(c.surface.lower().strip(".") in AMBIGUOUS_UNITS),
        "quote_unit": float(c.surface in QUOTE_UNITS),
        "slipped": float(c.slipped),
        "inherited_unit": float(c.inherited_unit),
        "fraction": float(c.fraction),
        "bare": float(c.bare),
        "listed": float(c.listed),
        "zero": float(c.value == 0),
        "integer": float(c.value == c.value.to_integral_value()),
        "ocr_confidence": c.confidence - 1.0,
        **_context_flags(c),
    }


def _standing_features(i: int, c: Candidate, entity: str, view: _TextView) -> dict[str, float]:
    """Where the candidate stands among the others: order, size rank, repeats, unit choice."""
    n, rank = view.n, view.ranks[i]
    order = i / (n - 1) if n > 1 else 0.0
    f = {
        "repeats": math.log(view.counts[(c.value, c.unit)]),
        "unit_share": view.unit_counts[c.unit] / n,
        "order": order, f"order:{entity}": order,
        "first": float(i == 0), f"first:{entity}": float(i == 0),
        "last": float(i == n - 1 and n > 1), f"last:{entity}": float(i == n - 1 and n > 1),
        f"largest:{entity}": float(view.n_sizes > 1 and rank == 0),
        f"second_largest:{entity}": float(view.n_sizes > 2 and rank == 1),
        f"smallest:{entity}": float(view.n_sizes > 1 and rank == view.n_sizes - 1),
        f"metric:{entity}": float(c.unit in METRIC),
        "metric_agrees": view.metric_share * (1 if c.unit in METRIC else -1),
    }
    return f


def _pair_features(i: int, candidates: Sequence[Candidate], entity: str, group: str | None,
                   priors: Priors, view: _TextView) -> dict[str, float]:
    """The label's unit convention, for a candidate whose quantity is also written in another
    unit: which of the two comes first, which is printed larger, which unit the group's
    labels use, and whether the rest of the label writes metric or imperial."""
    j = view.partners[i]
    if j is None:
        return {}
    c, other = candidates[i], candidates[j]
    role, metric = ("first" if i < j else "second"), c.unit in METRIC
    # The order habit differs by entity: a weight's label takes the second of 'NET WT 12 oz (340g)'
    # more often than not (text and photos alike), a dimension's the first of '16 cm / 6.3 in'.
    f = {f"pair_{role}": 1.0, f"pair_second:{entity}": float(role == "second"),
         f"pair_{role}_metric": float(metric), f"pair_metric:{entity}": float(metric),
         "pair_unit_habit": priors.group_unit_logp(entity, group, c.unit)
                            - priors.group_unit_logp(entity, group, other.unit),
         "pair_style": view.unpaired_metric_share * (1 if metric else -1),
         "pair_in_parentheses": float("(" in c.line_text[max(0, c.column - 2):c.column])}
    if c.box and other.box and c.line != other.line:
        f["pair_larger_text"] = math.log(max(_text_size(c), 1e-3) / max(_text_size(other), 1e-3))
    if c.box:
        rounder = _decimals(other) - _decimals(c)   # the original is often the rounder of the two
        f["pair_rounder"] = float((rounder > 0) - (rounder < 0))
        # Photos and running text disagree on the label's unit (text: centimetres 74% of the
        # dimension pairs; the dimension photos: inches 62%): each kind of input has its own.
        return {f"{name}@photo": value for name, value in f.items()}
    return f


def _decimals(c: Candidate) -> int:
    """Digits after the decimal point as written ('15.0' has one)."""
    return max(0, -int(c.value.as_tuple().exponent))


def _order_features(i: int, c: Candidate, entity: str, group: str | None, priors: Priors,
                    view: _TextView) -> dict[str, float]:
    """A dimension's habit in its group: where heights are usually larger than widths (as
    train.csv's images labelled with both show), the larger of the label's sizes is the height."""
    if entity not in DIMENSIONS or view.n_sizes < 2:
        return {}
    habit = sum(priors.larger_logodds(entity, s, group) for s in SIBLINGS[entity]) / 2
    place = 1 - 2 * view.ranks[i] / (view.n_sizes - 1)   # 1 for the largest, -1 for the smallest
    return {"order_habit": habit * place, f"order_habit:{entity}": habit * place}


def _place_features(i: int, c: Candidate, entity: str, view: _TextView) -> dict[str, float]:
    """The dimension a length's place on a diagram suggests: one printed upright (a vertical
    box, or at the far left or right of the other lengths) reads as the height, the lowest of
    the others as the width (along the bottom edge), any other as the depth (on a slanted
    edge). Two weights for all three entities: the dimension photos are few."""
    if entity not in DIMENSIONS or len(view.places) < 2 or view.ranks[i] not in view.places:
        return {}
    x, y = view.places[view.ranks[i]]
    xs, ys = [p[0] for p in view.places.values()], [p[1] for p in view.places.values()]
    width, height = _box_extent(c)
    lowest = y == max(ys)
    upright = height > 1.5 * width or (x in (min(xs), max(xs)) and not lowest)
    role = "height" if upright else "width" if lowest else "depth"
    return {"place_role_match" if role == entity else "place_role_other": 1.0}


GUIDE_ROLES = {"vertical": "height", "horizontal": "width", "slanted": "depth"}


def _guide_features(c: Candidate, entity: str) -> dict[str, float]:
    """Whether the drawn line beside the number (amlc.ocr.guides) measures this dimension: an
    upright line a height, a level one a width, a slanted one a depth. Two weights, like the
    place features: one per direction and dimension did no better on the few dimension photos."""
    if entity not in DIMENSIONS or not c.guide:
        return {}
    return {"guide_match" if GUIDE_ROLES[c.guide] == entity else "guide_other": 1.0}


def _layout_features(c: Candidate, entity: str, view: _TextView) -> dict[str, float]:
    """Dimension letters, position in 'a x b x c', the box and the line beside it on a photo."""
    f: dict[str, float] = {}
    if c.tag:
        f["tag_match" if c.tag == entity else "tag_other"] = 1.0
    if c.chain_size > 1 and entity in DIMENSIONS:
        f[f"chain{c.chain_index}of{c.chain_size}:{entity}"] = 1.0
    elif c.chain_size > 1:
        f["in_chain"] = 1.0
    f.update(_box_features(c, view.heights, entity))
    f.update(_guide_features(c, entity))
    return f


def featurize(candidates: Sequence[Candidate], entity: str, group: str | None,
              priors: Priors, mentions: Sequence[Candidate] = ()) -> list[dict[str, float]]:
    """Features for each candidate (all already allowed for the entity); `mentions` are all
    the number+unit mentions of the text, which tell whether it writes metric or imperial."""
    view = _TextView.of(candidates, mentions)
    out = []
    for i, c in enumerate(candidates):
        f = {**_prior_features(c, entity, group, priors), **_mention_features(c, entity),
             **_standing_features(i, c, entity, view), **_layout_features(c, entity, view),
             **_pair_features(i, candidates, entity, group, priors, view),
             **_order_features(i, c, entity, group, priors, view), **_place_features(i, c, entity, view)}
        if c.bare:   # unit-less numbers rank by their own weights (no unit evidence to share)
            f.update({"bare_value_logp": f["value_logp"], "bare_first": f["first"],
                      "bare_keyword": f["keyword"], "bare_repeats": f["repeats"],
                      "bare_largest": f[f"largest:{entity}"]})
        out.append(f)
    _mark_row_best(out, entity, ROW_BEST_PRIORS)
    return out


ROW_BEST_PRIORS = ("sibling_contrast", "group_size_logp")


def _mark_row_best(feats: list[dict[str, float]], entity: str, names: Sequence[str]) -> None:
    """'<name>_best' (overall and per entity) on the candidates that score highest on a prior
    within their row: the linear score sees a prior's value, not whether another number of the
    text fits the group better (which is how a height is told from the width beside it)."""
    for name in names:
        values = [f[name] for f in feats if name in f]
        if len(values) < 2:
            continue
        top = max(values)
        for f in feats:
            if f.get(name) == top:
                f[f"{name}_best"] = f[f"{name}_best:{entity}"] = 1.0
