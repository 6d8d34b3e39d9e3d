import pytest

from amlc.metric import classify_error, format_report, score


def test_hand_computed_counts():
    rows = [
        ("width", "10 inch", "10 inch"),          # TP
        ("width", "10 inch", "10.0 inch"),        # TP numerically, FP strictly
        ("width", "10 inch", "12 inch"),          # FP wrong value
        ("width", "10 inch", "10 centimetre"),    # FP wrong unit
        ("width", "10 inch", ""),                 # FN blank
        ("depth", "", "3 centimetre"),            # FP answer where truth is empty
        ("depth", "", ""),                        # TN
    ]
    report = score(rows)
    n = report.numeric
    assert (n.tp, n.fp, n.fn, n.tn) == (2, 3, 1, 1)
    assert n.precision == pytest.approx(2 / 5)
    assert n.recall == pytest.approx(2 / 3)
    assert report.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    s = report.strict
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 4, 1, 1)
    assert report.errors == {"wrong value": 1, "wrong unit": 1, "blank": 1,
                             "answer where truth is empty": 1}
    width, _ = report.per_entity["width"]
    assert (width.tp, width.fp, width.fn) == (2, 2, 1)


def test_a_blank_is_free_only_when_the_truth_is_blank():
    wrong = score([("voltage", "", "5 volt"), ("voltage", "230 volt", "")])
    blank = score([("voltage", "", ""), ("voltage", "230 volt", "")])
    assert wrong.numeric.fp == 1 and blank.numeric.fp == 0
    assert blank.numeric.tn == 1 and blank.f1 == 0.0


def test_all_correct_and_all_blank():
    assert score([("wattage", "60 watt", "60 watt")]).f1 == 1.0
    assert score([("wattage", "60 watt", "")]).f1 == 0.0


def test_invalid_prediction_is_a_wrong_answer():
    report = score([("item_weight", "2 gram", "2 gms")])
    assert report.numeric.fp == 1
    assert classify_error("item_weight", "2 gram", "2 gms") == "invalid prediction"


def test_report_lists_every_entity_and_the_total():
    text = format_report(score([("width", "1 inch", "1 inch"), ("voltage", "5 volt", "")]))
    assert "width" in text and "voltage" in text and text.splitlines()[-2].startswith("all")
