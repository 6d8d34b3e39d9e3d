"""Answers: the allowed units per entity, unit aliases, parsing and canonical formatting.

Every answer amlc writes goes through `Answer.__str__`, so every answer passes the official
format rule: `-?\\d+(\\.\\d+)?`, one space, then a unit allowed for the row's entity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

LENGTH = ("centimetre", "foot", "inch", "metre", "millimetre", "yard")
WEIGHT = ("gram", "kilogram", "microgram", "milligram", "ounce", "pound", "ton")
VOLTAGE = ("kilovolt", "millivolt", "volt")
WATTAGE = ("kilowatt", "watt")
VOLUME = (
    "centilitre", "cubic foot", "cubic inch", "cup", "decilitre", "fluid ounce", "gallon",
    "imperial gallon", "litre", "microlitre", "millilitre", "pint", "quart",
)

ENTITY_UNITS: dict[str, tuple[str, ...]] = {
    "width": LENGTH,
    "depth": LENGTH,
    "height": LENGTH,
    "item_weight": WEIGHT,
    "maximum_weight_recommendation": WEIGHT,
    "voltage": VOLTAGE,
    "wattage": WATTAGE,
    "item_volume": VOLUME,
}
ENTITIES: tuple[str, ...] = tuple(ENTITY_UNITS)
DIMENSIONS: tuple[str, ...] = ("height", "width", "depth")   # 67% of the test rows between them
ALL_UNITS: frozenset[str] = frozenset(u for units in ENTITY_UNITS.values() for u in units)

# How many base units (gram, millimetre, millilitre, volt, watt) one unit is; for ranking sizes.
SCALE: dict[str, float] = {
    "centimetre": 10, "foot": 304.8, "inch": 25.4, "metre": 1000, "millimetre": 1, "yard": 914.4,
    "gram": 1, "kilogram": 1000, "microgram": 1e-6, "milligram": 1e-3, "ounce": 28.35,
    "pound": 453.6, "ton": 1e6, "kilovolt": 1000, "millivolt": 1e-3, "volt": 1,
    "kilowatt": 1000, "watt": 1, "centilitre": 10, "cubic foot": 28317, "cubic inch": 16.39,
    "cup": 240, "decilitre": 100, "fluid ounce": 29.57, "gallon": 3785, "imperial gallon": 4546,
    "litre": 1000, "microlitre": 1e-3, "millilitre": 1, "pint": 473, "quart": 946}
EQUIVALENT = 0.04   # sizes within 4% are one measure written in two units ('250g (8.8 oz)')


def same_quantity(value_a: float, unit_a: str, value_b: float, unit_b: str) -> bool:
    """Whether two sizes are one measure, perhaps in two units ('6.2 inch' and '16 centimetre')."""
    a, b = float(value_a) * SCALE.get(unit_a, 1.0), float(value_b) * SCALE.get(unit_b, 1.0)
    return a > 0 and abs(a - b) <= EQUIVALENT * a

# Spellings seen in labels and on packaging, mapped to the canonical unit name. Keys are
# lower-case with dots removed; the extractor adds context rules ('"' is inch only next to a
# number, a bare 'm' is metre only for lengths) on top of this table.
UNIT_ALIASES: dict[str, str] = {
    **{u: u for u in ALL_UNITS},
    **{u + "s": u for u in ALL_UNITS if not u.endswith("s")},
    "centimeter": "centimetre", "centimeters": "centimetre", "cm": "centimetre", "cms": "centimetre",
    "millimeter": "millimetre", "millimeters": "millimetre", "mm": "millimetre",
    "meter": "metre", "meters": "metre", "m": "metre", "mtr": "metre", "mtrs": "metre",
    "feet": "foot", "ft": "foot", "'": "foot", "in": "inch", "inches": "inch", '"': "inch",
    "yd": "yard", "yds": "yard",
    "g": "gram", "gm": "gram", "gms": "gram", "gr": "gram", "grams": "gram",
    "kg": "kilogram", "kgs": "kilogram", "kilo": "kilogram", "kilos": "kilogram",
    "mg": "milligram", "mcg": "microgram", "µg": "microgram", "ug": "microgram",
    "oz": "ounce", "lb": "pound", "lbs": "pound", "ib": "pound", "ibs": "pound",
    "tons": "ton", "tonne": "ton", "tonnes": "ton", "t": "ton",
    "v": "volt", "vac": "volt", "vdc": "volt", "kv": "kilovolt", "mv": "millivolt",
    "w": "watt", "kw": "kilowatt",
    "ml": "millilitre", "milliliter": "millilitre", "milliliters": "millilitre",
    "l": "litre", "liter": "litre", "liters": "litre", "ltr": "litre", "lt": "litre",
    "cl": "centilitre", "centiliter": "centilitre", "dl": "decilitre", "deciliter": "decilitre",
    "µl": "microlitre", "microliter": "microlitre",
    "fl oz": "fluid ounce", "floz": "fluid ounce", "fl": "fluid ounce", "fluid ounces": "fluid ounce",
    "gal": "gallon", "gallons": "gallon", "pt": "pint", "qt": "quart", "cups": "cup",
    "cu ft": "cubic foot", "cubic feet": "cubic foot", "cu in": "cubic inch",
}

NUMBER_RE = re.compile(r"-?\d+(\.\d+)?")
_PREDICTION_RE = re.compile(r"^(-?\d+(?:\.\d+)?) +(\S.*)$")
_LABEL_RE = re.compile(r"^\s*(\[[^\]]*\]|[-+]?[\d.]+(?:[eE][-+]?\d+)?)\s+(.+?)\s*$")
_RANGE_TO_RE = re.compile(r"^\s*([\d.]+)\s+(.+?)\s+to\s+([\d.]+)\s+(.+?)\s*$")


class AnswerError(ValueError):
    """A text that cannot become a valid answer; the message says why."""


class UnitNotAllowed(AnswerError):
    """A well-formed '<number> <unit>' whose unit is unknown or not allowed for the entity."""


def format_number(value: Decimal) -> str:
    """Plain decimal notation with no exponent and no trailing zeros: 21.0 -> '21', 1e-3 -> '0.001'."""
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def to_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise AnswerError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise AnswerError(f"not a finite number: {text!r}")
    return value


@dataclass(frozen=True)
class Answer:
    value: Decimal
    unit: str

    def __str__(self) -> str:
        return f"{format_number(self.value)} {self.unit}"

    def label_text(self, whole_number_bare: bool = False) -> str:
        """The answer written as the train labels write it: a float's shortest form, so a whole
        number reads '21.0 centimetre' (95% of labels), or '21 centimetre' where the labels of
        this entity, unit and product group write whole numbers bare (common for weights)."""
        number = format_number(self.value)
        if "." not in number and not whole_number_bare:
            number += ".0"
        return f"{number} {self.unit}"


def canonical_unit(text: str) -> str | None:
    """The allowed unit a spelling stands for, or None if it names no known unit."""
    key = re.sub(r"\s+", " ", text.strip().lower().replace(".", ""))
    return UNIT_ALIASES.get(key)


def check_entity(entity: str) -> None:
    if entity not in ENTITY_UNITS:
        raise AnswerError(f"unknown entity {entity!r} (expected one of: {', '.join(ENTITIES)})")


def make_answer(value: Decimal | str, unit: str, entity: str) -> Answer:
    """An answer whose unit is allowed for the entity; raises AnswerError otherwise."""
    check_entity(entity)
    number = value if isinstance(value, Decimal) else to_decimal(value)
    name = canonical_unit(unit)
    if name is None:
        raise UnitNotAllowed(f"unknown unit {unit!r}")
    if name not in ENTITY_UNITS[entity]:
        raise UnitNotAllowed(f"unit {name!r} is not allowed for {entity}")
    return Answer(number, name)


def parse_label(text: str, entity: str) -> Answer:
    """Parse a training label leniently into its canonical answer.

    Float formatting ('21.0 centimetre') is normalised; a range ('[100.0, 240.0] volt' or
    '10 kilogram to 15 kilogram') becomes its upper bound, the value a product is rated for.
    A label whose unit is not allowed for the entity raises AnswerError.
    """
    to_range = _RANGE_TO_RE.match(text)
    if to_range:
        return make_answer(to_range.group(3), to_range.group(4), entity)
    match = _LABEL_RE.match(text)
    if not match:
        raise AnswerError(f"not '<number> <unit>': {text!r}")
    number, unit = match.groups()
    if number.startswith("["):
        bounds = [part for part in number.strip("[]").split(",") if part.strip()]
        if not bounds:
            raise AnswerError(f"empty range: {text!r}")
        return make_answer(max(to_decimal(b) for b in bounds), unit, entity)
    return make_answer(number, unit, entity)


def prediction_error(text: str, entity: str) -> str | None:
    """Why a submission cell breaks the official format for this entity, or None if it is valid.

    Empty is valid (an abstention). Stricter than the official checker: no spelling slips pass.
    """
    if entity not in ENTITY_UNITS:
        return f"unknown entity {entity!r}"
    if text == "":
        return None
    match = _PREDICTION_RE.match(text)
    if not match:
        return f"not '<number> <unit>': {text!r}"
    unit = match.group(2)
    if unit not in ENTITY_UNITS[entity]:
        return f"unit {unit!r} is not allowed for {entity}"
    return None


def parse_prediction(text: str, entity: str) -> Answer | None:
    """A valid submission cell as an Answer (None when blank); raises AnswerError when invalid."""
    reason = prediction_error(text, entity)
    if reason:
        raise AnswerError(reason)
    if text == "":
        return None
    number, unit = _PREDICTION_RE.match(text).groups()  # type: ignore[union-attr]
    return Answer(Decimal(number), unit)
