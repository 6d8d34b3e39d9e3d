"""The counts the schema's triggers keep (migrations/0004_counts.sql) equal what counting the
tables says, after every kind of write: plain, OR IGNORE, OR REPLACE, upserts, updates that
move a row to another key, deletes, and the schema's own triggers, with recursive triggers
off (SQLite's default) and on."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import aiosqlite
import pytest

from amlc.migrate import migrate, migrations_dir
from amlc.report import status_summary
from amlc.store import open_reader, open_writer
from store_helpers import amlc

TRUTH = {
    "jobs": ("SELECT stage, state, count(*) FROM jobs GROUP BY 1, 2",
             "SELECT stage, state, n FROM job_counts WHERE n != 0"),
    "samples": ("SELECT split, count(*), count(DISTINCT image_id), count(label) FROM samples GROUP BY 1",
                "SELECT split, samples, images, labelled FROM split_counts "
                "WHERE samples != 0 OR images != 0 OR labelled != 0"),
    "predictions": ("SELECT source, count(*), sum(prediction != '') FROM predictions GROUP BY 1",
                    "SELECT source, n, answered FROM prediction_counts WHERE n != 0 OR answered != 0"),
}

STAGES, STATES, SPLITS, SOURCES = ("fetch", "ocr", "extract"), ("pending", "leased", "done", "failed"), \
    ("train", "test"), ("rules", "model")
ITEMS = 12  # a small key space, so that writes collide often


def new_store(path: Path) -> Path:
    async def go() -> None:
        conn = await open_writer(path)
        await conn.close()
    asyncio.run(go())
    return path


def assert_counts_right(conn: sqlite3.Connection) -> None:
    for table, (truth, kept) in TRUTH.items():
        assert sorted(conn.execute(kept)) == sorted(conn.execute(truth)), table


def random_write(conn: sqlite3.Connection, rng: random.Random) -> str:
    """One write of a random kind on a random key (constraint errors are part of the game);
    returns the statement."""
    stage, state, item = rng.choice(STAGES), rng.choice(STATES), rng.randrange(1, ITEMS)
    split, source, label = rng.choice(SPLITS), rng.choice(SOURCES), rng.choice([None, "10 gram"])
    answer = rng.choice(["", "5 cm"])
    writes = [
        ("INSERT INTO jobs(stage, item_id, state) VALUES (?, ?, ?)", (stage, item, state)),
        ("INSERT OR IGNORE INTO jobs(stage, item_id, state) VALUES (?, ?, ?)", (stage, item, state)),
        ("INSERT OR REPLACE INTO jobs(stage, item_id, state) VALUES (?, ?, ?)", (stage, item, state)),
        ("INSERT INTO jobs(stage, item_id, state) VALUES (?, ?, ?) "
         "ON CONFLICT DO UPDATE SET state = excluded.state", (stage, item, state)),
        ("UPDATE jobs SET state = ? WHERE stage = ? AND item_id = ?", (state, stage, item)),
        ("UPDATE jobs SET item_id = ? WHERE stage = ? AND item_id = ?", (rng.randrange(1, ITEMS), stage, item)),
        ("UPDATE jobs SET state = 'done' WHERE stage IN ('fetch', 'ocr') AND item_id % 3 = ?",
         (item % 3,)),  # the schema's triggers add ocr jobs and re-queue extract jobs (REPLACE)
        ("DELETE FROM jobs WHERE stage = ? AND item_id = ?", (stage, item)),
        ("INSERT OR IGNORE INTO samples(split, idx, image_id, group_id, entity, label) "
         "VALUES (?, ?, ?, 'g', 'width', ?)", (split, item, rng.randrange(1, 5), label)),
        ("UPDATE samples SET label = ? WHERE idx = ?", (label, item)),
        ("UPDATE samples SET image_id = ? WHERE idx = ?", (rng.randrange(1, 5), item)),
        ("UPDATE samples SET split = ? WHERE idx = ?", (split, item)),
        ("DELETE FROM samples WHERE split = ? AND idx = ?", (split, item)),
        ("INSERT INTO predictions(sample_id, source, prediction, created_at) VALUES (?, ?, ?, 0)",
         (item, source, answer)),
        ("INSERT OR IGNORE INTO predictions(sample_id, source, prediction, created_at) VALUES (?, ?, ?, 0)",
         (item, source, answer)),
        ("INSERT OR REPLACE INTO predictions(sample_id, source, prediction, created_at) VALUES (?, ?, ?, 0)",
         (item, source, answer)),
        ("INSERT INTO predictions(sample_id, source, prediction, created_at) VALUES (?, ?, ?, 0) "
         "ON CONFLICT DO UPDATE SET prediction = excluded.prediction", (item, source, answer)),
        ("UPDATE predictions SET prediction = ? WHERE sample_id = ?", (answer, item)),
        ("UPDATE predictions SET source = ? WHERE sample_id = ?", (source, item)),
        ("DELETE FROM predictions WHERE sample_id = ? AND source = ?", (item, source)),
    ]
    sql, params = rng.choice(writes)
    try:
        conn.execute(sql, params)
    except sqlite3.IntegrityError:
        pass  # the statement is undone whole, its triggers' writes included
    return sql


@pytest.mark.parametrize("recursive", [False, True])
def test_counts_follow_every_kind_of_write(tmp_path: Path, recursive: bool) -> None:
    conn = sqlite3.connect(new_store(tmp_path / "amlc.db"))
    conn.execute(f"PRAGMA recursive_triggers = {int(recursive)}")
    conn.executemany("INSERT INTO images(link) VALUES (?)", [(f"https://x/{i}.jpg",) for i in range(1, 5)])
    rng = random.Random(7)
    kinds: Counter[str] = Counter()
    for step in range(3000):
        kinds[random_write(conn, rng)] += 1
        if step % 50 == 0:
            assert_counts_right(conn)
    assert_counts_right(conn)
    # every kind of write ran often, on 36 keys per table, so each met existing rows
    assert len(kinds) == 20 and min(kinds.values()) >= 100
    assert all(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TRUTH)
    conn.close()


def test_an_image_read_again_moves_its_extract_jobs_back_to_pending(tmp_path: Path) -> None:
    conn = sqlite3.connect(new_store(tmp_path / "amlc.db"))
    conn.execute("INSERT INTO images(link) VALUES ('https://x/1.jpg')")
    conn.executemany("INSERT INTO samples(split, idx, image_id, group_id, entity) VALUES ('test', ?, 1, 'g', 'width')",
                     [(i,) for i in range(3)])
    counts = "SELECT stage, state, n FROM stage_counts ORDER BY 1, 2"
    conn.execute("UPDATE jobs SET state = 'done' WHERE stage = 'fetch'")
    conn.execute("UPDATE jobs SET state = 'done' WHERE stage = 'ocr'")
    conn.execute("UPDATE jobs SET state = 'done' WHERE stage = 'extract'")
    assert list(conn.execute(counts)) == [("extract", "done", 3), ("fetch", "done", 1), ("ocr", "done", 1)]
    conn.execute("UPDATE jobs SET state = 'leased' WHERE stage = 'ocr'")
    conn.execute("UPDATE jobs SET state = 'done' WHERE stage = 'ocr'")  # read again: REPLACE
    assert list(conn.execute(counts)) == [("extract", "pending", 3), ("fetch", "done", 1), ("ocr", "done", 1)]
    assert_counts_right(conn)
    conn.close()


def test_migrating_a_filled_store_counts_what_is_there(tmp_path: Path) -> None:
    """A store filled before the counts existed gets them right when a newer amlc opens it."""
    store = store_before_counts(tmp_path)
    conn = sqlite3.connect(store)
    conn.executemany("INSERT INTO images(link) VALUES (?)", [(f"https://x/{i}.jpg",) for i in range(30)])
    conn.executemany("INSERT INTO samples(split, idx, image_id, group_id, entity, label) "
                     "VALUES (?, ?, ?, 'g', 'width', ?)",
                     [("test" if i % 3 else "train", i, i % 30 + 1, "1 cm" if i % 4 else None)
                      for i in range(50)])
    conn.execute("UPDATE jobs SET state = 'done' WHERE stage = 'fetch' AND item_id % 2 = 0")
    conn.execute("UPDATE jobs SET state = 'failed', last_error = 'http 404' "
                 "WHERE stage = 'fetch' AND item_id % 5 = 1")
    conn.execute("INSERT INTO predictions(sample_id, source, prediction, created_at) "
                 "SELECT id, 'rules', CASE WHEN id % 2 THEN '1 cm' ELSE '' END, 0 FROM samples")
    conn.commit()
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'job_counts'").fetchone() is None
    conn.close()
    new_store(store)  # opening it applies the rest
    conn = sqlite3.connect(store)
    assert_counts_right(conn)
    assert conn.execute("SELECT n FROM job_counts WHERE stage = 'fetch' AND state = 'failed'").fetchone() == (6,)
    conn.close()


def store_before_counts(tmp_path: Path) -> Path:
    """A store as amlc left it before migrations/0004_counts.sql."""
    older = tmp_path / "older"
    older.mkdir()
    for path in migrations_dir().glob("*.sql"):
        if path.name < "0004":
            shutil.copy(path, older)
    store = tmp_path / "amlc.db"

    async def go() -> None:
        conn = await aiosqlite.connect(store)
        try:
            await migrate(conn, older)
        finally:
            await conn.close()
    asyncio.run(go())
    return store


def test_status_reads_the_kept_counts(tmp_path: Path) -> None:
    store = new_store(tmp_path / "amlc.db")
    conn = sqlite3.connect(store)
    conn.executemany("INSERT INTO images(link) VALUES (?)", [(f"https://x/{i}.jpg",) for i in range(4)])
    conn.executemany("INSERT INTO samples(split, idx, image_id, group_id, entity, label) "
                     "VALUES (?, ?, ?, 'g', 'width', ?)",
                     [("val", 0, 1, "1 cm"), ("val", 1, 1, None), ("test", 0, 2, None), ("test", 1, 3, None)])
    conn.execute("UPDATE jobs SET state = 'failed', last_error = 'connection broke mid-body (received 10 of "
                 "200 bytes)' WHERE item_id = 1")
    conn.execute("UPDATE jobs SET state = 'failed', last_error = 'connection broke mid-body: 3 of 9 bytes' "
                 "WHERE item_id = 2")
    conn.execute("UPDATE jobs SET state = 'failed', last_error = 'http 404' WHERE item_id = 3")
    conn.execute("INSERT INTO predictions(sample_id, source, prediction, created_at) VALUES (1, 'rules', '', 0), "
                 "(2, 'rules', '2 cm', 0), (2, 'm', '3 cm', 0)")
    conn.execute("DELETE FROM samples WHERE split = 'test'")  # a split with no samples left is not shown
    conn.commit()
    conn.close()

    async def go() -> dict:
        reader = await open_reader(store)
        try:
            return await status_summary(reader)
        finally:
            await reader.close()
    summary = asyncio.run(go())
    assert summary["splits"] == [{"split": "val", "samples": 2, "images": 1, "labelled": 1}]
    assert summary["stages"]["fetch"] == {"failed": 3, "pending": 1}
    # one cause, whatever the byte counts (each message its own line before); statuses stay apart
    assert [(f["stage"], f["cause"], f["n"]) for f in summary["failures"]] == [
        ("fetch", "connection broke mid-body", 2), ("fetch", "http 404", 1)]
    assert summary["failures"][0]["error"].startswith("connection broke mid-body")
    assert summary["predictions"] == [{"source": "m", "n": 1, "answered": 1},
                                      {"source": "rules", "n": 2, "answered": 1}]


def test_status_on_a_store_not_yet_upgraded_says_what_to_do(tmp_path: Path) -> None:
    store_before_counts(tmp_path)
    result = amlc(tmp_path, "status", ok=False)
    assert result.exit_code == 1 and "older amlc" in result.output and "amlc run" in result.output
