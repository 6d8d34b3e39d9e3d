import json

import pytest

from amlc.metric import SAME_QUANTITY, TEST_MIX, classify_error, error_kind, format_report, score
from store_helpers import add_predictions, amlc, amlc_json, query, write_csv


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
                             "answer where truth is empty": 1,
                             "right value, label written otherwise (strict only)": 1}
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


def test_report_lists_every_entity_the_total_and_the_test_mix():
    text = format_report(score([("width", "1 inch", "1 inch"), ("voltage", "5 volt", "")]))
    lines = text.splitlines()
    assert "width" in text and "voltage" in text
    assert lines[-3].startswith("all ") and lines[-2].startswith("all, weighted to the test mix")


def test_the_same_quantity_in_another_unit_is_its_own_kind_of_error():
    assert error_kind("width", "6.2 inch", "16 centimetre") == SAME_QUANTITY     # 15.75 cm: within 4%
    assert error_kind("width", "20.0 inch", "50.8 centimetre") == SAME_QUANTITY
    assert error_kind("width", "6.2 inch", "6.2 centimetre") == "wrong unit"
    assert error_kind("item_weight", "2 ounce", "56.7 gram") == SAME_QUANTITY
    assert error_kind("width", "6.2 inch", "7 inch") == "wrong value"
    assert error_kind("width", "6.2 inch", "") == "blank"
    assert score([("width", "6.2 inch", "16 centimetre")]).errors == {SAME_QUANTITY: 1}


def test_report_names_the_entities_its_test_mix_figure_leaves_out():
    report = score([("item_weight", "5 gram", "5 gram"), ("voltage", "5 volt", "")])
    share, absent = report.mix_coverage()
    assert absent == ["depth", "height", "item_volume", "maximum_weight_recommendation", "wattage", "width"]
    assert share == pytest.approx((TEST_MIX["item_weight"] + TEST_MIX["voltage"]) / 131_187)
    weighted = format_report(report).splitlines()[-2]
    assert weighted.endswith("over 21% of the test mix; absent: depth, height, item_volume, "
                             "maximum_weight_recommendation, wattage, width")
    assert report.as_dict()["weighted"]["absent"] == absent
    everything = score([(e, "", "") for e in TEST_MIX])
    assert everything.mix_coverage() == (1.0, [])
    assert "absent" not in format_report(everything)


def test_report_gives_the_dimensions_together():
    text = format_report(score([("width", "1 inch", "1 inch"), ("height", "2 inch", "5 inch"),
                                ("item_weight", "5 gram", "")]))
    row = next(line for line in text.splitlines() if line.startswith("width/height/depth"))
    assert row.split()[1:5] == ["2", "0.500", "1.000", "0.667"]


def test_strict_compares_the_label_as_written():
    rows = [("width", "21.0 centimetre", "21.0 centimetre"),   # TP both ways
            ("width", "21.0 centimetre", "21 centimetre"),     # TP numerically, not as written
            ("item_weight", "500 gram", "500.0 gram"),         # the same, the other way round
            ("voltage", "[100.0, 240.0] volt", "240.0 volt")]  # a range label never matches as written
    report = score(rows)
    assert (report.numeric.tp, report.strict.tp, report.strict.fp) == (4, 1, 3)
    assert report.errors == {"right value, label written otherwise (strict only)": 3}


def test_weighted_f1_reweights_entities_to_the_test_mix():
    # width: 1 right, 1 blank; item_weight: 4 right. Each width row stands for TEST_MIX[width] / 2
    # test rows and each item_weight row for TEST_MIX[item_weight] / 4.
    rows = [("width", "1 inch", "1 inch"), ("width", "2 inch", "")] + [("item_weight", "5 gram", "5 gram")] * 4
    numeric, strict = score(rows).weighted()
    tp = TEST_MIX["width"] / 2 + TEST_MIX["item_weight"]
    fn = TEST_MIX["width"] / 2
    assert numeric.f1 == pytest.approx(2 * tp / (2 * tp + fn))
    assert strict.f1 == pytest.approx(numeric.f1)
    assert score(rows).f1 == pytest.approx(2 * 5 / (2 * 5 + 1))   # unweighted: 5 TP, 1 FN


def test_test_mix_is_the_official_test_files_entity_count():
    assert sum(TEST_MIX.values()) == 131_187


def test_eval_scores_strictly_against_the_raw_label_and_records_the_weighted_f1(tmp_path):
    link = "https://m.media-amazon.com/images/I/{}.jpg"
    path = write_csv(tmp_path / "val.csv", ["index", "image_link", "group_id", "entity_name", "entity_value"], [
        [0, link.format("a"), 1, "width", "10.0 centimetre"],
        [1, link.format("b"), 1, "item_weight", "200 gram"],
        [2, link.format("c"), 1, "item_weight", "1.5 kilogram"],
    ])
    amlc(tmp_path, "ingest", str(path), "--split", "val")
    add_predictions(tmp_path / "amlc.db", "val", {0: "10.0 centimetre", 1: "200.0 gram", 2: "2 kilogram"})
    report = amlc_json(tmp_path, "eval", "--split", "val")
    assert (report["numeric"]["tp"], report["numeric"]["fp"]) == (2, 1)
    assert (report["strict"]["tp"], report["strict"]["fp"]) == (1, 2)
    # width is all right and outweighs item_weight (half right) in the test mix
    assert report["weighted"]["numeric"]["f1"] > report["numeric"]["f1"]
    assert (report["dimensions"]["tp"], report["dimensions"]["f1"]) == (1, 1.0)  # width/height/depth pooled
    stored = json.loads(query(tmp_path / "amlc.db", "SELECT metrics FROM runs WHERE kind = 'eval'")[-1][0])
    assert stored["weighted"] == report["weighted"]
    assert stored["by_source"]["rules"] == {"f1": pytest.approx(report["numeric"]["f1"]),
                                           "strict_f1": pytest.approx(report["strict"]["f1"]),
                                           "weighted_f1": pytest.approx(report["weighted"]["numeric"]["f1"]),
                                           "learned_rows": 0}  # the rules learned from no row of it
    text = amlc(tmp_path, "eval", "--split", "val").output
    assert "all, weighted to the test mix" in text
    assert text.splitlines()[-2].endswith("amlc report --split val") and text.splitlines()[-1].startswith("f1=")


@pytest.mark.parametrize("error,cause", [
    ("connection broke mid-body (received 10 of 200 bytes)", "connection broke mid-body"),
    ("timeout after 5s reading /mnt/photos/a b/x.jpg", "timeout after Ns reading PATH"),
    ("http 404", "http 404"), ("http 503", "http 503"),
    ("not an image: text/html, 1234 bytes", "not an image"),
    ("decompression bomb: 20000x20000 = 400000000 pixels", "decompression bomb"),
    ("no such file '/x/y.jpg'", "no such file '...'"),
])
def test_failures_are_counted_by_cause(error, cause):
    from amlc.faults import failure_cause
    assert failure_cause(error) == cause
