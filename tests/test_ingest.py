import pytest

from store_helpers import DATA, amlc, amlc_json, query, write_csv

TEST_ROWS, TEST_IMAGES = 131_187, 90_666


@pytest.fixture(scope="module")
def test_store(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    first = amlc_json(workdir, "ingest", str(DATA / "test.csv"), "--split", "test")
    return workdir, first


def test_official_test_file_counts(test_store):
    workdir, first = test_store
    assert first["rows"] == TEST_ROWS and first["inserted"] == TEST_ROWS and first["rejected"] == 0
    store = workdir / "amlc.db"
    assert query(store, "SELECT count(*), count(DISTINCT image_id) FROM samples "
                        "WHERE split = 'test'") == [(TEST_ROWS, TEST_IMAGES)]
    assert query(store, "SELECT count(*) FROM images") == [(TEST_IMAGES,)]
    assert query(store, "SELECT min(idx), max(idx) FROM samples") == [(0, 131287)]
    # every unique image waits for its download, once
    assert query(store, "SELECT state, count(*) FROM jobs GROUP BY state") == [("pending", TEST_IMAGES)]


def test_reingest_changes_nothing(test_store):
    workdir, _ = test_store
    store = workdir / "amlc.db"
    before = query(store, "SELECT count(*), sum(id), sum(image_id) FROM samples")
    again = amlc_json(workdir, "ingest", str(DATA / "test.csv"), "--split", "test")
    assert again["inserted"] == 0 and again["already_present"] == TEST_ROWS
    assert query(store, "SELECT count(*), sum(id), sum(image_id) FROM samples") == before
    assert query(store, "SELECT count(*) FROM jobs") == [(TEST_IMAGES,)]


def test_train_file_without_index_gets_row_numbers(tmp_path):
    report = amlc_json(tmp_path, "ingest", str(DATA / "train_partial.csv"), "--split", "train")
    assert report["rows"] == 195_108 and report["rejected"] == 0
    store = tmp_path / "amlc.db"
    first = query(store, "SELECT idx, entity, label, raw_label FROM samples WHERE split = 'train' "
                         "ORDER BY idx LIMIT 1")
    assert first == [(0, "item_weight", "500 gram", "500.0 gram")]
    ranges = query(store, "SELECT count(*) FROM samples WHERE raw_label LIKE '[%' AND label IS NOT NULL")
    assert ranges[0][0] > 1500
    # labels outside the allowed units keep their sample, unlabelled, with the reason
    assert report["unusable_labels"] > 500
    assert query(store, "SELECT count(*) FROM samples WHERE label_error LIKE '%horsepower%'")[0][0] > 100


def test_bad_rows_are_reported_by_line_and_the_rest_kept(tmp_path):
    link = "https://m.media-amazon.com/images/I/{}.jpg"
    path = tmp_path / "labelled.csv"
    path.write_text(
        "index,image_link,group_id,entity_name,entity_value\n"
        f"0,{link.format('a')},1,width,10.0 centimetre\n"        # line 2 good
        f"1,{link.format('b')},1,colour,10 centimetre\n"         # line 3 unknown entity
        f"2,,1,width,10 centimetre\n"                            # line 4 empty link
        f"3,{link.format('c')},1,width\n"                        # line 5 missing field
        f"x,{link.format('d')},1,width,1 inch\n"                 # line 6 bad index
        f"4,{link.format('e')},1,item_weight,heavy\n"            # line 7 malformed label
        f'5,{link.format("f")},1,height,"3.5\ninch"\n'           # lines 8-9 quoted newline, good
        f"0,{link.format('g')},1,width,1 inch\n"                 # line 10 duplicate index
        f"6,{link.format('a')},1,depth,\n"                       # line 11 empty truth, good
    )
    report = amlc_json(tmp_path, "ingest", str(path), "--split", "val")
    assert report["rows"] == 9 and report["inserted"] == 3 and report["rejected"] == 6
    rejects = query(tmp_path / "amlc.db", "SELECT line, reason FROM rejects ORDER BY line")
    assert [line for line, _ in rejects] == [3, 4, 5, 6, 7, 10]
    reasons = dict(rejects)
    assert "unknown entity 'colour'" in reasons[3]
    assert "empty image_link" in reasons[4]
    assert "expected 5 fields, got 4" in reasons[5]
    assert "not an integer" in reasons[6]
    assert "malformed label" in reasons[7]
    assert "duplicate index 0 (first on line 2)" in reasons[10]
    kept = query(tmp_path / "amlc.db", "SELECT idx, label FROM samples ORDER BY idx")
    assert kept == [(0, "10 centimetre"), (5, "3.5 inch"), (6, None)]
    # the human report names lines too
    text = amlc(tmp_path, "ingest", str(path), "--split", "val").output
    assert "line 3: unknown entity 'colour'" in text and "3 already present" in text


def test_missing_columns_fail_the_file_clearly(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["index", "image_link"], [[0, "x"]])
    result = amlc(tmp_path, "ingest", str(path), "--split", "x", ok=False)
    assert result.exit_code == 1 and "lacks column(s) group_id, entity_name" in result.output
