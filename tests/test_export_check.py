import json

import pytest

from store_helpers import DATA, add_predictions, amlc, amlc_json, query, write_csv

SAMPLE = DATA / "sample_test.csv"
VAL_HEADER = ["index", "image_link", "group_id", "entity_name", "entity_value"]


@pytest.fixture
def sample_store(tmp_path):
    amlc(tmp_path, "ingest", str(SAMPLE), "--split", "sample")
    return tmp_path


def test_all_blank_export_of_the_full_test_passes_our_checker(tmp_path):
    amlc(tmp_path, "ingest", str(DATA / "test.csv"), "--split", "test")
    out = tmp_path / "submission.csv"
    amlc(tmp_path, "export", str(out), "--split", "test")
    lines = out.read_text().splitlines()
    assert lines[0] == "index,prediction" and len(lines) == 131_187 + 1
    assert lines[1] == "0," and lines[-1] == "131287,"
    result = amlc_json(tmp_path, "check", str(out), "--against", str(DATA / "test.csv"))
    assert result["ok"] and result["rows"] == 131_187


MODEL = "smollm2-lora"
VAL_LINK = "https://m.media-amazon.com/images/I/{}.jpg"
VAL_ROWS = [[0, VAL_LINK.format("a"), 1, "width", "10.0 centimetre"],
            [1, VAL_LINK.format("b"), 1, "height", "5 inch"],
            [2, VAL_LINK.format("c"), 1, "item_weight", "200 gram"],
            [3, VAL_LINK.format("d"), 1, "voltage", "12 volt"]]


def export_rows(workdir, *args):
    """Export the sample split; returns (the printed text, {index: prediction})."""
    out = workdir / "out.csv"
    text = amlc(workdir, "export", str(out), "--split", "sample", *args).output
    assert amlc_json(workdir, "check", str(out), "--against", str(SAMPLE))["ok"]
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [int(i) for i, _ in rows] == sorted(int(i) for i, _ in rows)
    return text, dict(rows)


@pytest.fixture
def scored_store(sample_store):
    """The sample split answered by the rules and a model, and a labelled val split scored
    by `amlc eval`, where the model gets 3 of 4 right and the rules 2."""
    store = sample_store / "amlc.db"
    amlc(sample_store, "ingest", str(write_csv(sample_store / "val.csv", VAL_HEADER, VAL_ROWS)), "--split", "val")
    add_predictions(store, "val", {0: "10 centimetre", 1: "5 inch", 2: "1 gram", 3: "1 volt"})
    add_predictions(store, "val", {0: "10 centimetre", 1: "5 inch", 2: "200 gram", 3: ""}, source=MODEL)
    add_predictions(store, "sample", {0: "10 foot", 1: "12 inch", 2: "5 pound"})
    add_predictions(store, "sample", {0: "21.9 foot", 1: ""}, source=MODEL)  # no answer for 2
    return sample_store


def test_export_uses_the_rules_until_an_eval_shows_a_model_beat_them(scored_store):
    text, answers = export_rows(scored_store)
    assert "answers from 'rules' (no F1 per source is recorded yet" in text
    assert answers["0"] == "10 foot" and answers["1"] == "12 inch" and answers["5"] == ""

    assert amlc(scored_store, "eval", "--split", "val").exit_code == 0
    text, answers = export_rows(scored_store)
    assert f"answers from '{MODEL}' (F1 0.8571 beat the rules' 0.6667 on split 'val'" in text
    # the model's answer; where it is blank or missing the rules' answer, never its blank
    assert (answers["0"], answers["1"], answers["2"]) == ("21.9 foot", "12 inch", "5 pound")
    assert f"1 from {MODEL}" in text and "2 from rules" in text


def test_export_keeps_a_model_blank_or_another_source_only_when_asked(scored_store):
    amlc(scored_store, "eval", "--split", "val")
    _, answers = export_rows(scored_store, "--keep-model-blanks")
    assert (answers["0"], answers["1"], answers["2"]) == ("21.9 foot", "", "5 pound")
    text, answers = export_rows(scored_store, "--source", "rules")
    assert "answers from 'rules' (asked for with --source)" in text and answers["0"] == "10 foot"
    refused = amlc(scored_store, "export", str(scored_store / "x.csv"), "--split", "sample",
                   "--source", "gpt", ok=False)
    assert refused.exit_code == 1 and f"sources with answers: rules, {MODEL}" in refused.output
    assert not (scored_store / "x.csv").exists()


def test_export_follows_the_newest_eval(scored_store):
    amlc(scored_store, "eval", "--split", "val")
    # the model gets worse on val, and a new eval records it
    add_predictions(scored_store / "amlc.db", "val", {0: "", 1: "", 2: "1 gram"}, source=MODEL)
    amlc(scored_store, "eval", "--split", "val")
    text, answers = export_rows(scored_store)
    assert "answers from 'rules' (the rules' F1 0.6667 on split 'val'" in text
    assert f"best model {MODEL} 0.0000" in text and answers["0"] == "10 foot"
    recorded = query(scored_store / "amlc.db", "SELECT json_extract(metrics, '$.by_source') FROM runs "
                                               "WHERE kind = 'eval' ORDER BY id")
    assert [json.loads(r)["rules"]["f1"] for (r,) in recorded] == [pytest.approx(2 / 3)] * 2


def test_export_refuses_an_invalid_answer_and_leaves_the_old_file(sample_store):
    out = sample_store / "out.csv"
    out.write_text("previous\n")
    add_predictions(sample_store / "amlc.db", "sample", {0: "2 gms"})
    result = amlc(sample_store, "export", str(out), "--split", "sample", ok=False)
    assert result.exit_code == 1 and "index 0" in result.output and "2 gms" in result.output
    assert out.read_text() == "previous\n"
    assert [p.name for p in sample_store.iterdir() if p.name.startswith(".out")] == []


def test_export_of_an_unknown_split_is_an_error(sample_store):
    result = amlc(sample_store, "export", str(sample_store / "x.csv"), "--split", "nope", ok=False)
    assert "has no samples" in result.output


def test_checker_accepts_the_official_sample_output():
    from amlc.check import check_submission
    assert check_submission(DATA / "sample_test_out.csv", SAMPLE).ok


@pytest.mark.parametrize("mutate,expected", [
    (lambda rows: rows[:-1], "1 index(es) of sample_test.csv missing, first: 87"),
    (lambda rows: rows + [["87", ""]], "duplicate index 87"),
    (lambda rows: rows + [["999999", ""]], "index 999999 is not in the test file"),
    (lambda rows: [["0", "21.9 feet"]] + rows[1:], "line 2: index 0 (width): unit 'feet' is not allowed"),
    (lambda rows: [["0", "2.2e2 foot"]] + rows[1:], "line 2: index 0 (width): not '<number> <unit>'"),
    (lambda rows: [["0", "10 volt"]] + rows[1:], "unit 'volt' is not allowed for width"),
    (lambda rows: [["zero", ""]] + rows[1:], "line 2: index 'zero' is not an integer"),
])
def test_checker_fails_broken_submissions_naming_the_row(tmp_path, mutate, expected):
    rows = [line.split(",", 1) for line in (DATA / "sample_test_out.csv").read_text().splitlines()[1:]]
    path = write_csv(tmp_path / "broken.csv", ["index", "prediction"], mutate(rows))
    result = amlc(tmp_path, "check", str(path), "--against", str(SAMPLE), ok=False)
    assert result.exit_code == 1 and "FAILED" in result.output
    assert expected in result.output


def test_checker_rejects_a_wrong_header(tmp_path):
    path = write_csv(tmp_path / "h.csv", ["idx", "prediction"], [])
    result = amlc(tmp_path, "check", str(path), "--against", str(SAMPLE), ok=False)
    assert "header must be 'index,prediction'" in result.output


def test_eval_scores_a_labelled_split(tmp_path):
    link = "https://m.media-amazon.com/images/I/{}.jpg"
    path = write_csv(tmp_path / "val.csv", ["index", "image_link", "group_id", "entity_name", "entity_value"], [
        [0, link.format("a"), 1, "width", "10.0 centimetre"],
        [1, link.format("a"), 1, "height", "[5.0, 7.0] inch"],
        [2, link.format("b"), 1, "voltage", ""],
        [3, link.format("c"), 1, "wattage", "5 horsepower"],
    ])
    amlc(tmp_path, "ingest", str(path), "--split", "val")
    add_predictions(tmp_path / "amlc.db", "val", {0: "10 centimetre", 1: "5 inch", 2: "", 3: "3 watt"})
    text = amlc(tmp_path, "eval", "--split", "val").output
    assert text.splitlines()[-1] == "f1=0.6667"  # P = 1/2, R = 1/1
    assert "skipped 1 samples without a usable label" in text
    report = amlc_json(tmp_path, "eval", "--split", "val")
    assert report["numeric"]["tp"] == 1 and report["numeric"]["fp"] == 1 and report["numeric"]["tn"] == 1
    # '10 centimetre' equals '10.0 centimetre' as numbers, but not as the label is written
    assert report["errors"] == {"wrong value": 1, "right value, label written otherwise (strict only)": 1}
