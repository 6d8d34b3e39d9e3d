import csv
import re
import sqlite3

import pytest

from store_helpers import DATA, amlc, amlc_json, query, write_csv

TEST_ROWS, TEST_IMAGES = 131_187, 90_666
REQUIRED_HEADER = ["index", "image_link", "group_id", "entity_name"]


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
    report = amlc_json(tmp_path, "ingest", str(DATA / "train.csv"), "--split", "train")
    assert report["rows"] == 261_764 and report["rejected"] == 0
    store = tmp_path / "amlc.db"
    first = query(store, "SELECT idx, entity, label, raw_label FROM samples WHERE split = 'train' "
                         "ORDER BY idx LIMIT 1")
    assert first == [(0, "item_weight", "0.8 kilogram", "0.8 kilogram")]
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


LABELLED = ["index", "image_link", "group_id", "entity_name", "entity_value"]
LINK = "https://m.media-amazon.com/images/I/{}.jpg"


def test_a_stray_quote_or_an_oversized_field_costs_only_its_line(tmp_path):
    big = "9" * (csv.field_size_limit() + 1)
    path = tmp_path / "quotes.csv"
    path.write_text(
        ",".join(LABELLED) + "\n"
        f"0,{LINK.format('a')},1,width,10 centimetre\n"        # line 2 good
        f'1,"{LINK.format("b")},1,width,5 centimetre\n'        # line 3 a quote that never closes
        f"2,{LINK.format('c')},1,height,3 inch\n"              # line 4 good (was swallowed)
        f'3,{LINK.format("d")},1,"depth"x,3 inch\n'            # line 5 text after a closing quote
        f"4,{LINK.format('e')},1,width,{big}\n"                # line 6 over the csv field limit
        f'5,{LINK.format("f")},1,width,"7 centimetre"\n'       # line 7 good, quoted
        f'6,{LINK.format("g")},1,height,"3.5\ninch"\n'         # lines 8-9 good, a quoted line break
        f"7,{LINK.format('h')},1,width,2 inch\n"               # line 10 good
    )
    with path.open(newline="") as handle:  # what the csv module alone makes of it
        with pytest.raises(csv.Error):
            list(csv.reader(handle, strict=True))
    report = amlc_json(tmp_path, "ingest", str(path), "--split", "val")
    assert report["rows"] == 8 and report["inserted"] == 5 and report["rejected"] == 3
    store = tmp_path / "amlc.db"
    reasons = dict(query(store, "SELECT line, reason FROM rejects ORDER BY line"))
    assert reasons == {
        3: 'stray quote: a field opens with " and no closing quote ends it on this line',
        5: 'stray quote: text follows the closing " of a quoted field',
        6: f"a field is longer than {csv.field_size_limit()} characters (the csv module's limit)"}
    assert query(store, "SELECT idx, label FROM samples ORDER BY idx") == [
        (0, "10 centimetre"), (2, "3 inch"), (5, "7 centimetre"), (6, "3.5 inch"), (7, "2 inch")]
    raw = query(store, "SELECT length(raw) FROM rejects WHERE line = 6")[0][0]
    assert raw == 1000  # a huge row is kept in part, for reading, not whole


def test_a_file_that_is_not_utf8_names_the_file_and_the_offset(tmp_path):
    head = (",".join(REQUIRED_HEADER) + "\n" + f"0,{LINK.format('a')},1,width\n").encode()
    path = tmp_path / "latin1.csv"
    path.write_bytes(head + f"1,{LINK.format('b')},1,width\n".encode() + b"2,caf\xe9,1,width\n")
    result = amlc(tmp_path, "ingest", str(path), "--split", "t", ok=False)
    offset = len(head) + len(f"1,{LINK.format('b')},1,width\n") + len("2,caf")
    assert result.exit_code == 1
    assert f"{path} is not UTF-8 text: byte offset {offset} (line 4) holds 0xe9" in result.output
    store = tmp_path / "amlc.db"
    assert query(store, "SELECT count(*) FROM samples") == [(0,)]  # nothing of the file is kept
    assert query(store, "SELECT status FROM runs WHERE kind = 'ingest'") == [("failed",)]


def test_ingesting_changed_labels_updates_them_and_says_how_many(tmp_path):
    rows = [[0, LINK.format("a"), 1, "width", "10 centimetre"],
            [1, LINK.format("b"), 1, "height", "5 inch"],
            [2, LINK.format("c"), 1, "item_weight", "200 gram"],
            [3, LINK.format("d"), 1, "voltage", "x volt"]]  # line 5: malformed
    path = write_csv(tmp_path / "val.csv", LABELLED, rows)
    first = amlc_json(tmp_path, "ingest", str(path), "--split", "val")
    assert first["inserted"] == 3 and first["rejected"] == 1 and first["labels_changed"] == 0
    store = tmp_path / "amlc.db"
    samples = "SELECT id, idx, image_id, group_id, entity FROM samples ORDER BY idx"
    before, jobs = query(store, samples), query(store, "SELECT * FROM jobs ORDER BY item_id")
    assert amlc_json(tmp_path, "ingest", str(path), "--split", "val")["labels_changed"] == 0

    rows[0][4] = "12 centimetre"               # changed
    rows[1][4] = ""                            # now an empty truth
    rows[2][1] = LINK.format("other")          # another image under the same index: not this sample
    rows[2][4] = "300 gram"
    rows[3][4] = "12 volt"                     # the rejected line, fixed
    write_csv(path, LABELLED, rows)
    text = amlc(tmp_path, "ingest", str(path), "--split", "val").output
    assert "1 new, 3 already present, 2 label(s) changed and updated, 0 rejected" in text
    assert query(store, "SELECT idx, label, raw_label FROM samples ORDER BY idx") == [
        (0, "12 centimetre", "12 centimetre"), (1, None, ""), (2, "200 gram", "200 gram"),
        (3, "12 volt", "12 volt")]
    assert query(store, samples)[:3] == before  # nothing but labels changed
    assert query(store, "SELECT * FROM jobs ORDER BY item_id")[:3] == jobs
    assert query(store, "SELECT count(*) FROM rejects") == [(0,)]  # the fixed line is no longer listed
    # a file without labels never touches them
    write_csv(path, REQUIRED_HEADER, [[r[0], r[1], r[2], r[3]] for r in rows])
    assert amlc_json(tmp_path, "ingest", str(path), "--split", "val")["labels_changed"] == 0
    assert query(store, "SELECT label FROM samples WHERE idx = 0") == [("12 centimetre",)]


def test_every_command_on_a_store_from_a_newer_amlc_says_upgrade(tmp_path):
    amlc(tmp_path, "ingest", str(DATA / "sample_test.csv"), "--split", "s")
    with sqlite3.connect(tmp_path / "amlc.db") as con:
        con.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 0)")
    for command in (["status"], ["sql", "SELECT 1"], ["export", str(tmp_path / "o.csv"), "--split", "s"],
                    ["ingest", str(DATA / "sample_test.csv"), "--split", "s"]):
        result = amlc(tmp_path, *command, ok=False)
        assert result.exit_code == 1, command
        assert re.search(r"this store was written by a newer amlc \(schema 9999 > \d+\): upgrade amlc",
                         result.output), (command, result.output)


def test_a_long_ingest_commits_in_batches_that_other_connections_see(tmp_path, monkeypatch):
    """A writer beside the ingest (amlc run) waits for one batch, not for the whole file."""
    import asyncio
    import sqlite3

    from amlc import ingest as ingest_module
    from amlc.store import open_writer
    monkeypatch.setattr(ingest_module, "BATCH", 10)
    path = write_csv(tmp_path / "t.csv", REQUIRED_HEADER, [[i, LINK.format(i), 1, "width"] for i in range(35)])
    seen = []

    def progress(rows: int) -> None:   # another connection, as amlc status or the daemon would see it
        with sqlite3.connect(tmp_path / "amlc.db") as other:
            seen.append((rows, other.execute("SELECT count(*) FROM samples").fetchone()[0]))

    async def go():
        conn = await open_writer(tmp_path / "amlc.db")
        try:
            return await ingest_module.ingest(conn, path, "t", progress=progress)
        finally:
            await conn.close()
    report = asyncio.run(go())
    assert report.inserted == 35 and seen == [(10, 10), (20, 20), (30, 30), (35, 35)]


def test_a_file_not_utf8_late_in_it_stores_nothing_even_past_a_batch(tmp_path, monkeypatch):
    from amlc import ingest as ingest_module
    monkeypatch.setattr(ingest_module, "BATCH", 2)
    rows = "".join(f"{i},{LINK.format(i)},1,width\n" for i in range(9)).encode()
    path = tmp_path / "late.csv"
    path.write_bytes((",".join(REQUIRED_HEADER) + "\n").encode() + rows + b"9,caf\xe9,1,width\n")
    result = amlc(tmp_path, "ingest", str(path), "--split", "t", ok=False)
    assert result.exit_code == 1 and "is not UTF-8 text" in result.output
    assert query(tmp_path / "amlc.db", "SELECT count(*) FROM samples") == [(0,)]
