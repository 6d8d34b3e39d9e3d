"""Candidates: every "<number> <unit>" mention in an image's OCR lines, with where it stands.

A scan finds number tokens (decimal commas, thousands separators, fractions, mixed fractions,
unicode fractions, a blank after a decimal point before a unit, OCR letter-for-digit slips when
a unit after it or a times sign joining it to another number proves it is a number), reads the
unit that follows each (aliases and misspellings, dots and spaces inside), then links
numbers joined by a range sign (`100-240V`) or a times sign (`10 x 20 x 30 cm`) so the members
without their own unit take the chain's unit. Lines are joined with newlines, so a number and a
unit split across OCR boxes on consecutive lines still meet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Sequence

from ..units import UNIT_ALIASES, format_number

Box = tuple[tuple[float, float], ...]

# Spellings the label table lacks but OCR and packaging produce; 0z/0Z is the O/0 slip in 'oz'.
# Keys are lower case without dots, like UNIT_ALIASES' keys.
EXTRA_UNIT_SPELLINGS: dict[str, str] = {
    "0z": "ounce", "ozs": "ounce", "ounces": "ounce", "onz": "ounce", "fl oz": "fluid ounce",
    "fl0z": "fluid ounce", "fl 0z": "fluid ounce", "floz": "fluid ounce", "fluid oz": "fluid ounce",
    "grm": "gram", "grms": "gram", "gram": "gram", "gramm": "gram", "gramos": "gram", "grammes": "gram",
    "lit": "litre", "litres": "litre", "litros": "litre", "ltrs": "litre", "mls": "millilitre",
    "millilitres": "millilitre", "cc": "millilitre",
    "cm": "centimetre", "centimetres": "centimetre", "mms": "millimetre", "millimetres": "millimetre",
    "metres": "metre", "mtr": "metre", "inchs": "inch", "inche": "inch", "lnch": "inch", "lnches": "inch",
    "pounds": "pound", "1b": "pound", "1bs": "pound", "kilograms": "kilogram", "kilogramme": "kilogram",
    "milligrams": "milligram", "micrograms": "microgram",
    "volt": "volt", "volts": "volt", "v~": "volt", "vac~": "volt", "vdc": "volt", "vac": "volt",
    "watts": "watt", "watt": "watt", "kilowatts": "kilowatt",
    # 'e' is the EU estimated-quantity sign (℮) read as a letter: '250ge', '1000ge', '500mle'.
    "ge": "gram", "kge": "kilogram", "mle": "millilitre",
    "″": "inch", "”": "inch", "''": "inch", "′": "foot", "’": "foot",
}
ALIASES: dict[str, str] = {**UNIT_ALIASES, **EXTRA_UNIT_SPELLINGS}

# Units so short that they often stand for something else ('5 in 1', 'Made in', 'W x H').
AMBIGUOUS_UNITS = frozenset({"in", "m", "t", "l", "fl", "'", "’", "′", "g", "v", "w", "gr", "lt", "cc"})
QUOTE_UNITS = frozenset({'"', "'", "″", "”", "''", "′", "’"})
DIMENSION_TAGS = {"h": "height", "w": "width", "d": "depth", "l": "depth"}


def _alias_pattern(alias: str) -> str:
    """A spelling as a regex that tolerates dots and spaces between its letters ('c.m.', 'fl. oz')."""
    if alias in QUOTE_UNITS:
        return re.escape(alias)
    parts = [re.escape(ch) for ch in alias if ch != " "]
    return r"\.?\s?".join(parts) + r"\.?"


def _unit_regex() -> re.Pattern[str]:
    keys = sorted(ALIASES, key=len, reverse=True)
    words = "|".join(f"(?:{_alias_pattern(k)})" for k in keys if k not in QUOTE_UNITS)
    quotes = "|".join(_alias_pattern(k) for k in keys if k in QUOTE_UNITS)
    # A word unit ends where a word ends; 'x' may follow ('12cmx5cm'), other letters may not,
    # which is what rejects 'mAh', 'Wh', 'kWh', 'mins' and the like. A quote may touch a
    # dimension letter ('10"H').
    return re.compile(rf"(?:{words})(?![A-WYZa-wyz])|{quotes}", re.IGNORECASE)


UNIT_RE = _unit_regex()

UNICODE_FRACTIONS = {"½": Fraction(1, 2), "¼": Fraction(1, 4), "¾": Fraction(3, 4), "⅓": Fraction(1, 3),
                     "⅔": Fraction(2, 3), "⅛": Fraction(1, 8), "⅜": Fraction(3, 8), "⅝": Fraction(5, 8),
                     "⅞": Fraction(7, 8)}
_UF = "".join(UNICODE_FRACTIONS)
NUMBER_RE = re.compile(
    # Not inside another number; a dot after a letter is punctuation ('AVE.73G'), and a dot
    # after a blank starts a decimal ('.5"').
    rf"(?<![\d,])(?<!\d\.)(?:"
    rf"(?<![A-Za-z])\.(?P<lead>\d+)"                               # .5
    rf"|(?P<mixed>\d+)[\s-]+(?P<mnum>\d+)/(?P<mden>\d+)"         # 3 1/2, 1-1/2
    rf"|(?P<fnum>\d+)/(?P<fden>\d+)"                           # 3/4
    rf"|(?P<int>\d*)(?P<uf>[{_UF}])"                           # 3½, ½
    rf"|(?P<thou>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?)(?![\d,])"   # 1,500 or 1,500.5
    rf"|(?P<dec>\d+(?:[.,]\d+)?)"                              # 12, 12.5, 12,5
    rf")(?![\d/])")
# Digits with O/o/l/I/S slips ('1O0g', 'S00ml', and digit-free 'IOOg', 'ISKG' that start with
# a 1-like letter, 'SOOml' that starts with a 5 and 'O.5kg'), only trusted when a unit follows
# or when a times sign joins them to another number ('(SOx7Scm)'). An 's' after the decimal
# point is a 5 too ('4.scm'). A times sign may stand right before one ('75x11Ocm').
LOOSE_NUMBER_RE = re.compile(r"(?:(?<![A-Za-z0-9.,])|(?<=[0-9OIS][xX]))"
                             r"(?:[0-9OoIlS]*\d[0-9OoIlS]*|[Il][0-9OoIlS]+|S[OI0-9]+|O(?=[.,]))"
                             r"(?:[.,][0-9OoIlSs]+)?")
_SLIPS = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "s": "5"})
SLIP_NUMBER_RE = re.compile(r"(?:[1-9]\d*|0)(?:\.\d+)?")
# '4. 5cm': OCR put a blank after a decimal point; a unit right after makes it one number.
SPACED_DECIMAL_RE = re.compile(r"(?<![\d.,])(\d{1,3})\. (\d{1,2})(?![\d/.,])")
RANGE_SEP_RE = re.compile(r"\s*(?:-|–|~|to|TO)\s*")
TIMES_SEP_RE = re.compile(r"\s*(?:[xX×*]|by)\s*")
TAG_RE = re.compile(r"\s?\(?([HWDLhwdl])\)?(?![A-Za-z])")


@dataclass(frozen=True)
class NumberToken:
    value: Decimal
    start: int
    end: int
    slipped: bool = False      # letters were read as digits
    fraction: bool = False


@dataclass
class Candidate:
    """One number with its unit, as it appears in the OCR text."""
    value: Decimal
    unit: str                  # canonical unit name
    surface: str               # the unit as written
    start: int                 # character offsets in the joined text
    end: int
    line: int
    line_text: str
    column: int = 0            # offset of the number within its line
    line_before: str = ""      # the OCR line before its own (a label's keyword often sits there)
    range_role: str = ""       # '', 'low' or 'high' (100-240V)
    chain_index: int = 0       # position in '10 x 20 x 30 cm', 0-based
    chain_size: int = 1
    tag: str = ""              # dimension letter written beside it: height/width/depth
    inherited_unit: bool = False
    slipped: bool = False
    fraction: bool = False
    bare: bool = False         # no unit written; the unit is the group's usual one
    listed: bool = False       # no unit written; took the unit of a list it heads ('10 13.77 26.77"')
    box: Box | None = None
    guide: str = ""            # the drawn line beside it on a photo: 'vertical', 'horizontal', 'slanted'
    near_lines: tuple[str, ...] = ()   # other lines just above it or left of it on the photo
    confidence: float = 1.0    # OCR confidence of its line
    score: float = 0.0         # set by the chooser
    features: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def answer_text(self) -> str:
        return f"{format_number(self.value)} {self.unit}"

    def __str__(self) -> str:
        snippet = self.line_text.strip()
        if len(snippet) > 60:
            lo = max(0, self.column - 25)
            snippet = snippet[lo:lo + 60]
        assumed = " [unit assumed]" if self.bare else ""
        return f"{self.answer_text}{assumed} (line {self.line + 1}: {snippet!r})"


def _to_decimal(fraction: Fraction) -> Decimal:
    exact = Decimal(fraction.numerator) / Decimal(fraction.denominator)
    return exact.quantize(Decimal("0.001")).normalize() if fraction.denominator != 1 else exact


def _decimal_text(text: str) -> Decimal:
    """'12,5' -> 12.5 (decimal comma); '1,500' is handled by the thousands branch."""
    return Decimal(text.replace(",", "."))


def _match_value(m: re.Match[str]) -> tuple[Decimal, bool] | None:
    g = m.groupdict()
    if g["mixed"] is not None:
        num, den = int(g["mnum"]), int(g["mden"])
        if den == 0 or num >= den or den > 64:
            return None
        return _to_decimal(int(g["mixed"]) + Fraction(num, den)), True
    if g["fnum"] is not None:
        num, den = int(g["fnum"]), int(g["fden"])
        if den == 0 or den > 64 or num > 4 * den:   # 12/2023 is a date, not a fraction
            return None
        return _to_decimal(Fraction(num, den)), True
    if g["uf"] is not None:
        return _to_decimal(int(g["int"] or 0) + UNICODE_FRACTIONS[g["uf"]]), True
    if g["lead"] is not None:
        return Decimal("0." + g["lead"]), False
    if g["thou"] is not None:
        return Decimal(g["thou"].replace(",", "")), False
    return _decimal_text(g["dec"]), False


def find_numbers(text: str) -> list[NumberToken]:
    numbers: list[NumberToken] = []
    for m in NUMBER_RE.finditer(text):
        parsed = _match_value(m)
        if parsed is not None:
            numbers.append(NumberToken(parsed[0], m.start(), m.end(), fraction=parsed[1]))
    for token in _slipped_numbers(text, numbers):
        numbers = [n for n in numbers if not (token.start <= n.start < token.end)] + [token]
    for token in _spaced_decimals(text):
        # It replaces its integer part only: some labels read '1. 5g' as 5 g, so '5' stays.
        numbers = [n for n in numbers if n.start != token.start] + [token]
    return sorted(numbers, key=lambda n: n.start)


def _spaced_decimals(text: str) -> list[NumberToken]:
    """'4. 5cm' as 4.5, marked as a slip; only before a unit, where a blank after a decimal
    point is an OCR gap rather than the end of a sentence."""
    return [NumberToken(Decimal(f"{m.group(1)}.{m.group(2)}"), m.start(), m.end(), slipped=True)
            for m in SPACED_DECIMAL_RE.finditer(text) if read_unit(text, m.end())]


def _slipped_numbers(text: str, numbers: list[NumberToken]) -> list[NumberToken]:
    """Words with letters read for digits that a unit or a times-sign chain proves numbers.
    Read right to left, so a chain member knows whether the number after its sign counts."""
    starts = {n.start for n in numbers}
    spans = {(n.start, n.end) for n in numbers}
    found: list[NumberToken] = []
    for m in reversed(list(LOOSE_NUMBER_RE.finditer(text))):
        word = m.group()
        if word.isdigit() or (m.start(), m.end()) in spans:
            continue
        fixed = word.translate(_SLIPS).replace(",", ".")
        if SLIP_NUMBER_RE.fullmatch(fixed) and _proven_number(text, m, starts | {n.start for n in found}):
            found.append(NumberToken(Decimal(fixed), m.start(), m.end(), slipped=True))
    return found


def _proven_number(text: str, m: re.Match[str], number_starts: set[int]) -> bool:
    """A unit touches the word, or a times sign leads from it to another number (a digit-free
    word must touch its sign too: 'SIX 5cm' is not 51 x 5 cm)."""
    word, end = m.group(), m.end()
    if UNIT_RE.match(text, end):
        return not (word[-1] in "oOlI" and UNIT_RE.match(text, end - 1))   # '5l', '1Oz' are units
    sign = TIMES_SEP_RE.match(text, end)
    return bool(sign and sign.end() in number_starts
                and (any(ch.isdigit() for ch in word) or sign.end() == end + 1))


@dataclass
class _Unit:
    canonical: str
    surface: str
    end: int


def read_unit(text: str, pos: int) -> _Unit | None:
    """The unit starting at pos, after at most one blank run (spaces or a line break)."""
    gap = re.compile(r"[ \t]*\n?[ \t]*").match(text, pos)
    start = gap.end() if gap else pos
    m = UNIT_RE.match(text, start)
    if not m:
        return _unit_in_parentheses(text, start)
    surface = m.group()
    key = re.sub(r"\s+", " ", surface.lower().replace(".", "")).strip()
    key = key if key in ALIASES else key.replace(" ", "")
    canonical = ALIASES.get(key)
    if canonical is None:
        return None
    if surface in QUOTE_UNITS and start != pos:
        return None    # a quote is inch/foot only right against its number
    return _Unit(canonical, surface, m.end())


PAREN_OPEN_RE = re.compile(r"\(\s*")
PAREN_CLOSE_RE = re.compile(r"\s*\)")


def _unit_in_parentheses(text: str, pos: int) -> _Unit | None:
    """A word unit alone in parentheses after a number or a product: '100(g)', '12*16*6 (cm)'."""
    opening = PAREN_OPEN_RE.match(text, pos)
    if not opening:
        return None
    unit = read_unit(text, opening.end())
    closing = PAREN_CLOSE_RE.match(text, unit.end) if unit and unit.surface not in QUOTE_UNITS else None
    return _Unit(unit.canonical, unit.surface, closing.end()) if unit and closing else None


def _tag_after(text: str, pos: int) -> tuple[str, int]:
    m = TAG_RE.match(text, pos)
    return (DIMENSION_TAGS[m.group(1).lower()], m.end()) if m else ("", pos)


@dataclass
class _Link:
    number: NumberToken
    unit: _Unit | None
    tag: str
    end: int


def _link(text: str, number: NumberToken) -> _Link:
    unit = read_unit(text, number.end)
    # 'W'/'H'/'D'/'L' against a number inside '40W x 60H cm' is a dimension letter, not
    # watt/litre: it is one when a times sign or another unit follows it.
    if unit and unit.surface.lower() in DIMENSION_TAGS:
        after = TIMES_SEP_RE.match(text, unit.end)
        if (after and after.end() > unit.end) or read_unit(text, unit.end):
            unit = None
    if unit:
        tag, end = _tag_after(text, unit.end)
        return _Link(number, unit, tag, end)
    tag, end = _tag_after(text, number.end)
    unit = read_unit(text, end) if tag else None
    return _Link(number, unit, tag, unit.end if unit else end)


def _chains(text: str, links: list[_Link]) -> list[tuple[str, list[_Link]]]:
    """Group consecutive numbers joined by a range sign or a times sign."""
    chains: list[tuple[str, list[_Link]]] = []
    i = 0
    while i < len(links):
        chain, kind = [links[i]], ""
        while i + 1 < len(links):
            gap = text[chain[-1].end:links[i + 1].number.start]
            joined = ("range" if RANGE_SEP_RE.fullmatch(gap) and kind in ("", "range") and len(chain) < 2
                      else "times" if TIMES_SEP_RE.fullmatch(gap) and kind in ("", "times") and len(chain) < 4
                      else "")
            if not joined or (chain[-1].unit and joined == "range" and links[i + 1].unit
                              and chain[-1].unit.canonical != links[i + 1].unit.canonical):
                break
            kind = joined
            chain.append(links[i + 1])
            i += 1
        chains.append((kind, chain))
        i += 1
    return chains


class LineIndex:
    """Maps offsets of the joined text back to lines."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        self.starts: list[int] = []
        pos = 0
        for line in self.lines:
            self.starts.append(pos)
            pos += len(line) + 1
        self.text = "\n".join(self.lines)

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _chain_candidates(kind: str, chain: list[_Link], index: LineIndex) -> list[Candidate]:
    final_unit = next((link.unit for link in reversed(chain) if link.unit), None)
    out: list[Candidate] = []
    for pos, link in enumerate(chain):
        unit = link.unit or (final_unit if kind else None)
        if unit is None:
            continue
        line = index.line_of(link.number.start)
        cand = Candidate(
            value=link.number.value, unit=unit.canonical, surface=unit.surface,
            start=link.number.start, end=link.end, line=line, line_text=index.lines[line],
            column=link.number.start - index.starts[line],
            range_role=("low" if pos == 0 else "high") if kind == "range" else "",
            chain_index=pos if kind == "times" else 0, chain_size=len(chain) if kind == "times" else 1,
            tag=link.tag, inherited_unit=link.unit is None, slipped=link.number.slipped,
            fraction=link.number.fraction)
        out.append(cand)
    return out


LIST_GAP_RE = re.compile(r"[ \t]+")
LIST_REACH = 3   # unit-less numbers at most this many places before the number whose unit they take


def _listed_candidates(links: list[_Link], index: LineIndex) -> list[Candidate]:
    """Unit-less numbers in a blank-separated list that ends in a number with a unit take that
    unit ('27.5 32.2 29.9 cm' is rare; '10 13.77 26.77"' is common in size charts)."""
    out = []
    for i, link in enumerate(links):
        if link.unit or link.tag:
            continue
        for j in range(i + 1, min(i + 1 + LIST_REACH, len(links))):
            if not LIST_GAP_RE.fullmatch(index.text[links[j - 1].end:links[j].number.start]):
                break
            if links[j].unit:
                out += _chain_candidates("list", [link, links[j]], index)[:1]
                out[-1].listed = True
                break
    return out


def line_texts(ocr: str | Sequence[Any]) -> tuple[list[str], list[Any]]:
    """The text of each line, and the line objects (empty for a plain string)."""
    if isinstance(ocr, str):
        return ocr.splitlines() or [""], []
    items = list(ocr)
    return [item if isinstance(item, str) else str(getattr(item, "text", "")) for item in items], items


def extract_candidates(ocr: str | Sequence[Any]) -> list[Candidate]:
    """Every number+unit mention in reading order. `ocr` is a string or line-like objects
    (`.text`, optional `.confidence` and `.box`) or strings, one per line."""
    texts, items = line_texts(ocr)
    index = LineIndex(texts)
    links = [_link(index.text, n) for n in find_numbers(index.text)]
    candidates = [c for kind, chain in _chains(index.text, links)
                  for c in _chain_candidates(kind, chain, index)]
    taken = {c.start for c in candidates}
    candidates += [c for c in _listed_candidates(links, index) if c.start not in taken]
    candidates.sort(key=lambda c: c.start)
    _attach_lines(candidates, items, index)
    return candidates


def _attach_lines(candidates: list[Candidate], items: list[Any], index: LineIndex) -> None:
    for cand in candidates:
        cand.line_before = index.lines[cand.line - 1] if cand.line > 0 else ""
        item = items[cand.line] if cand.line < len(items) else None
        if item is not None and not isinstance(item, str):
            cand.box = getattr(item, "box", None)
            cand.guide = getattr(item, "guide", "")
            cand.confidence = float(getattr(item, "confidence", 1.0) or 0.0)
            cand.near_lines = _near_lines(cand.line, items, index)


Extent = tuple[float, float, float, float]


def _extent(box: Box) -> Extent:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return min(xs), max(xs), min(ys), max(ys)


NEAR_ABOVE = 2.0   # line heights above a line that a heading over it may sit ('NET WT' over '300g')
NEAR_LEFT = 8.0    # line heights to the left that a label on the same row may start


def _near_lines(line: int, items: list[Any], index: LineIndex) -> tuple[str, ...]:
    """The texts of the lines that sit just above this one (overlapping it sideways) or end
    just left of it on the same row: where a photo's keyword stands when the OCR read it as a
    separate line that reading order does not put right before the number."""
    box = getattr(items[line], "box", None)
    if not box:
        return ()
    x0, x1, y0, y1 = _extent(box)
    h = min(x1 - x0, y1 - y0)
    near = []
    for k, other in enumerate(items):
        other_box = getattr(other, "box", None) if k != line and not isinstance(other, str) else None
        if not other_box:
            continue
        ox0, ox1, oy0, oy1 = _extent(other_box)
        above = y0 - NEAR_ABOVE * h <= oy1 <= y0 + h / 2 and ox0 < x1 and ox1 > x0
        left = abs((oy0 + oy1) / 2 - (y0 + y1) / 2) < 0.6 * h and x0 - NEAR_LEFT * h < ox1 <= x0 + h
        if above or left:
            near.append(index.lines[k])
    return tuple(near)


def bare_numbers(ocr: str | Sequence[Any]) -> list[NumberToken]:
    """Numbers with no unit after them."""
    texts, _ = line_texts(ocr)
    text = "\n".join(texts)
    return [n for n in find_numbers(text) if read_unit(text, n.end) is None]


BARE_MAX_DIGITS = 5   # longer digit runs are codes, phone numbers, batch numbers


def bare_candidates(ocr: str | Sequence[Any], unit: str) -> list[Candidate]:
    """Unit-less numbers given `unit`: the fallback when no number has a usable unit.
    Percentages, codes and zero are left out."""
    texts, items = line_texts(ocr)
    index = LineIndex(texts)
    out = []
    for n in bare_numbers(ocr):
        digits = sum(ch.isdigit() for ch in index.text[n.start:n.end])
        if n.value <= 0 or digits > BARE_MAX_DIGITS or index.text[n.end:n.end + 1] == "%":
            continue
        line = index.line_of(n.start)
        out.append(Candidate(n.value, unit, "", n.start, n.end, line, index.lines[line],
                             column=n.start - index.starts[line], slipped=n.slipped,
                             fraction=n.fraction, bare=True))
    _attach_lines(out, items, index)
    return out
