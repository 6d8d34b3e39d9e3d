"""The drawn line beside a number (amlc.ocr.guides): which segment is its guide, kept in the
store, weighed by the shipped ranker (both engines find them on a real reading: tests/test_ocr.py)."""

from __future__ import annotations

import pytest

from amlc.ocr.base import OcrLine, OcrResult
from amlc.ocr.guides import direction, guide_of


def test_a_line_through_the_text_or_too_short_is_not_its_guide():
    box = ((100, 100), (200, 100), (200, 140), (100, 140))   # 40 px high
    underline = (100.0, 138.0, 200.0, 138.0)                 # inside the box: a stroke of the text
    stub = (90.0, 100.0, 90.0, 180.0)                       # beside it but under 3 text heights
    far = (100.0, 300.0, 400.0, 300.0)                      # long, but 160 px below
    assert guide_of(box, [underline, stub, far], 900) == ""
    assert guide_of(box, [underline, (90.0, 0.0, 90.0, 400.0)], 900) == "vertical"
    assert [direction(s) for s in ((0, 0, 100, 5), (0, 0, 5, 100), (0, 0, 100, 100))] == \
        ["horizontal", "vertical", "slanted"]


def test_guides_are_kept_in_the_stored_reading():
    result = OcrResult([OcrLine("25 cm", 0.99, ((0, 0), (9, 0), (9, 9), (0, 9)), "vertical"),
                        OcrLine("box", 0.9, ((0, 20), (9, 20), (9, 29), (0, 29)))], "rapidocr")
    assert OcrResult.from_json(result.to_json()) == result
    old = '{"lines":[{"text":"5 cm","confidence":0.9,"box":[[0,0],[9,0],[9,9],[0,9]]}],"engine":"rapidocr"}'
    assert OcrResult.from_json(old).lines[0].guide == ""   # stores read before guides existed


@pytest.mark.parametrize("upright,level", [("30 cm", "45 cm"), ("45 cm", "30 cm")])
def test_the_shipped_ranker_reads_the_upright_line_as_the_height(upright, level):
    """Two lengths written level side by side; which is the height follows the drawn lines."""
    from amlc.extract.choose import Extractor
    left, right = ((200, 400), (300, 400), (300, 440), (200, 440)), ((500, 400), (600, 400), (600, 440), (500, 440))
    lines = [OcrLine(upright, 0.99, left, "vertical"), OcrLine(level, 0.99, right, "horizontal")]
    extractor = Extractor.load()
    assert extractor.predict("height", lines).text() == f"{upright.split()[0]}.0 centimetre"
    assert extractor.predict("width", lines).text() == f"{level.split()[0]}.0 centimetre"
