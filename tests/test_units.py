import re
from decimal import Decimal

import pytest

from amlc.units import (ENTITY_UNITS, AnswerError, UnitNotAllowed, canonical_unit, format_number,
                        make_answer, parse_label, parse_prediction, prediction_error)

OFFICIAL = re.compile(r"^-?\d+(\.\d+)?\s+\S")


@pytest.mark.parametrize("text,entity,expected", [
    ("21.0 centimetre", "width", "21 centimetre"),
    ("500.0 gram", "item_weight", "500 gram"),
    ("0.25 pound", "item_weight", "0.25 pound"),
    ("1.0 cup", "item_volume", "1 cup"),
    ("[100.0, 240.0] volt", "voltage", "240 volt"),
    ("[10.0, 12.0] fluid ounce", "item_volume", "12 fluid ounce"),
    ("10 kilogram to 15 kilogram", "maximum_weight_recommendation", "15 kilogram"),
    ("2.2e2 kilogram", "item_weight", "220 kilogram"),
    ("12.5 Centimetre", "height", "12.5 centimetre"),
])
def test_labels_become_canonical_answers(text, entity, expected):
    answer = parse_label(text, entity)
    assert str(answer) == expected
    assert prediction_error(str(answer), entity) is None


@pytest.mark.parametrize("text,entity", [
    ("5.0 horsepower", "wattage"),
    ("3.0 kilowatt hour", "wattage"),
    ("16.0 ounce", "item_volume"),
    ("4.0 candela", "height"),
])
def test_units_outside_the_allowed_set_are_named(text, entity):
    with pytest.raises(UnitNotAllowed):
        parse_label(text, entity)


@pytest.mark.parametrize("text", ["gram", "", "abc def", "[] volt", "1..2 gram"])
def test_malformed_labels_raise(text):
    with pytest.raises(AnswerError):
        parse_label(text, "item_weight")


@pytest.mark.parametrize("text,valid", [
    ("2 gram", True), ("12.5 centimetre", False), ("2.56 ounce", True), ("", True),
    ("2 gms", False), ("60 ounce/1.7 kilogram", False), ("2.2e2 kilogram", False),
    ("6.75 lbs", False), (".5 gram", False), ("1,000 gram", False), ("-3 gram", True),
    ("10  gram", True), ("10 Gram", False), ("10 gram ", False),
])
def test_prediction_format_follows_the_official_rule(text, valid):
    assert (prediction_error(text, "item_weight") is None) is valid


def test_unit_must_be_allowed_for_the_entity():
    assert "not allowed for voltage" in prediction_error("10 watt", "voltage")
    assert prediction_error("10 watt", "wattage") is None
    assert "unknown entity" in prediction_error("10 watt", "power")


@pytest.mark.parametrize("value,expected", [
    ("21.0", "21"), ("0.50", "0.5"), ("1E+3", "1000"), ("1e-3", "0.001"), ("-0.0", "0"),
    ("100", "100"), ("12.340", "12.34"),
])
def test_numbers_are_formatted_without_exponent_or_trailing_zeros(value, expected):
    assert format_number(Decimal(value)) == expected


def test_every_allowed_unit_round_trips():
    for entity, units in ENTITY_UNITS.items():
        for unit in units:
            answer = make_answer("1.50", unit, entity)
            assert OFFICIAL.match(str(answer))
            assert parse_prediction(str(answer), entity) == answer


@pytest.mark.parametrize("alias,unit", [
    ("cm", "centimetre"), ("CM", "centimetre"), ("lbs", "pound"), ("fl. oz", "fluid ounce"),
    ("Kg", "kilogram"), ("ml", "millilitre"), ("feet", "foot"), ('"', "inch"), ("W", "watt"),
])
def test_aliases(alias, unit):
    assert canonical_unit(alias) == unit


def test_unknown_alias_is_none():
    assert canonical_unit("mAh") is None


@pytest.mark.parametrize("value,bare,expected", [
    ("21", False, "21.0 centimetre"),     # the float form 95% of train labels use
    ("21", True, "21 centimetre"),        # where the group's labels write whole numbers bare
    ("21.00", False, "21.0 centimetre"),
    ("12.50", False, "12.5 centimetre"),  # a fraction is written the same either way
    ("12.5", True, "12.5 centimetre"),
    ("0.001", False, "0.001 centimetre"),
    ("1E+3", False, "1000.0 centimetre"),
])
def test_answers_are_written_as_the_labels_write_them(value, bare, expected):
    text = make_answer(value, "centimetre", "width").label_text(bare)
    assert text == expected
    assert prediction_error(text, "width") is None and OFFICIAL.match(text)
    assert parse_label(text, "width") == make_answer(value, "centimetre", "width")
