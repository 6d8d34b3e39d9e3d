import json
import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from amlc import jobs
from amlc.migrate import SchemaTooNew, known_migrations, migrate, migrations_dir
from amlc.store import fetch_all, open_reader, open_writer
from store_helpers import DATA, amlc


def run(coro):
    return asyncio.run(coro)


async def _rows(conn, sql, params=()):
    return [tuple(r) for r in await fetch_all(conn, sql, params)]


def test_store_is_wal_and_fully_migrated(tmp_path):
    async def go():
        conn = await open_writer(tmp_path / "s.db")
        mode = await _rows(conn, "PRAGMA journal_mode")
        versions = await _rows(conn, "SELECT version FROM schema_migrations ORDER BY version")
        await conn.close()
        return mode, versions
    mode, versions = run(go())
    assert mode == [("wal",)]
    assert [v for (v,) in versions] == [m.version for m in known_migrations()]


def test_a_store_made_by_an_older_schema_migrates_and_keeps_its_rows(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(migrations_dir() / "0001_init.sql", old)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    (new / "0002_note.sql").write_text("ALTER TABLE samples ADD COLUMN note TEXT;\n"
                                       "UPDATE samples SET note = 'migrated';")

    async def go():
        conn = await sqlite_conn(tmp_path / "s.db")
        assert [m.version for m in await migrate(conn, old)] == [1]
        await conn.execute("INSERT INTO images(link) VALUES ('http://x/a.jpg')")
        await conn.execute("INSERT INTO samples(split, idx, image_id, group_id, entity) "
                           "VALUES ('t', 0, 1, 'g', 'width')")
        await conn.commit()
        assert [m.version for m in await migrate(conn, new)] == [2]
        assert await migrate(conn, new) == []
        rows = await _rows(conn, "SELECT idx, note FROM samples")
        await conn.close()
        return rows
    assert run(go()) == [(0, "migrated")]


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(migrations_dir() / "0001_init.sql", folder)
    (folder / "0002_broken.sql").write_text("CREATE TABLE half (x);\nSELECT * FROM no_such_table;")

    async def go():
        conn = await sqlite_conn(tmp_path / "s.db")
        with pytest.raises(sqlite3.OperationalError):
            await migrate(conn, folder)
        versions = await _rows(conn, "SELECT version FROM schema_migrations")
        tables = await _rows(conn, "SELECT name FROM sqlite_master WHERE name = 'half'")
        await conn.close()
        return versions, tables
    assert run(go()) == ([(1,)], [])


def test_a_store_newer_than_the_code_is_refused(tmp_path):
    store = tmp_path / "amlc.db"
    amlc(tmp_path, "ingest", str(DATA / "sample_test.csv"), "--split", "s")
    con = sqlite3.connect(store)
    con.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 0)")
    con.commit()
    con.close()
    with pytest.raises(SchemaTooNew, match=r"written by a newer amlc \(schema 9999 > \d+\)"):
        run(open_writer(store))
    result = amlc(tmp_path, "ingest", str(DATA / "sample_test.csv"), "--split", "s", ok=False)
    assert result.exit_code == 1 and "upgrade amlc" in result.output


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_a_corrupt_or_truncated_store_is_a_clear_error(tmp_path, damage):
    store = tmp_path / "amlc.db"
    amlc(tmp_path, "ingest", str(DATA / "sample_test.csv"), "--split", "s")
    data = store.read_bytes()
    store.write_bytes(b"not a database at all" * 100 if damage == "garbage" else data[:1000])
    for path in tmp_path.glob("amlc.db-*"):
        path.unlink()
    for command in (["status"], ["ingest", str(DATA / "sample_test.csv"), "--split", "s"]):
        result = amlc(tmp_path, *command, ok=False)
        assert result.exit_code == 1 and "amlc store" in result.output, result.output


def test_status_without_a_store_says_what_to_do(tmp_path):
    result = amlc(tmp_path / "nothing", "status", ok=False)
    assert "run `amlc ingest` first" in result.output


def test_claims_never_overlap_and_dead_leases_return_with_fair_budgets(tmp_path):
    async def go():
        conn = await open_writer(tmp_path / "s.db")
        await conn.executemany("INSERT INTO images(link) VALUES (?)", [(f"u{i}",) for i in range(10)])
        await conn.commit()
        first = await jobs.claim(conn, "fetch", 4)
        second = await jobs.claim(conn, "fetch", 4, lease_seconds=-1)  # already expired
        assert not {c.item_id for c in first} & {c.item_id for c in second}
        began, queued = second[:2], second[2:]
        await jobs.mark_started(conn, "fetch", [(c, None) for c in began])
        assert await jobs.release_dead(conn, max_attempts=1) == 4  # only the expired ones
        failed = await fetch_all(conn, "SELECT item_id, last_error FROM jobs WHERE state = 'failed'")
        # work that had begun spent its only try; queued work got its try back
        assert {(r[0], r[1]) for r in failed} == {(c.item_id, jobs.DIED) for c in began}
        third = await jobs.claim(conn, "fetch", 100)
        taken = {c.item_id for c in first} | {c.item_id for c in began}
        assert {c.item_id for c in third} == set(range(1, 11)) - taken
        queued_ids = {q.item_id for q in queued}
        assert {c.item_id: c.attempts for c in third if c.item_id in queued_ids} == dict.fromkeys(queued_ids, 1)
        await conn.close()
    run(go())


def test_failures_retry_within_the_budget_then_fail(tmp_path):
    policy = jobs.RetryPolicy(max_attempts=2, backoff_base=0.0)

    async def go():
        conn = await open_writer(tmp_path / "s.db")
        await conn.execute("INSERT INTO images(link) VALUES ('u')")
        states = []
        for _ in range(2):
            (item,) = await jobs.claim(conn, "fetch", 1)
            await conn.execute(*jobs.failure_statement("fetch", item, "http 500", True, policy))
            await conn.commit()
            states += await _rows(conn, "SELECT state, attempts, last_error FROM jobs")
        await conn.close()
        return states
    assert run(go()) == [("pending", 1, "http 500"), ("failed", 2, "http 500")]


def test_triggers_chain_the_stages(tmp_path):
    async def go():
        conn = await open_writer(tmp_path / "s.db")
        await conn.execute("INSERT INTO images(link) VALUES ('u')")
        await conn.execute("INSERT INTO samples(split, idx, image_id, group_id, entity) VALUES ('t', 0, 1, 'g', 'width')")
        for stage in ("fetch", "ocr"):
            await conn.execute(*jobs.done_statement(stage, 1))
        # a sample ingested after its image was OCR'd needs extraction at once
        await conn.execute("INSERT INTO samples(split, idx, image_id, group_id, entity) VALUES ('t', 1, 1, 'g', 'depth')")
        await conn.commit()
        rows = await _rows(conn, "SELECT stage, item_id, state FROM jobs ORDER BY stage, item_id")
        await conn.close()
        return rows
    assert run(go()) == [("extract", 1, "pending"), ("extract", 2, "pending"),
                         ("fetch", 1, "done"), ("ocr", 1, "done")]


def test_reader_cannot_write(tmp_path):
    amlc(tmp_path, "ingest", str(DATA / "sample_test.csv"), "--split", "s")

    async def go():
        conn = await open_reader(tmp_path / "amlc.db")
        try:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await conn.execute("DELETE FROM samples")
        finally:
            await conn.close()
    run(go())


async def sqlite_conn(path):
    import aiosqlite
    return await aiosqlite.connect(path)


def test_a_batch_that_cannot_be_written_is_rolled_back_whole_and_kept(tmp_path):
    from amlc.writer import BatchWriter

    async def go():
        conn = await open_writer(tmp_path / "s.db")
        writer = BatchWriter(conn)
        good = ("INSERT INTO images(link) VALUES (?)", ("a",))
        bad = ("INSERT INTO images(link) VALUES (?)", (None,))  # NOT NULL: the batch cannot commit
        writer.submit([good, bad])
        with pytest.raises(sqlite3.IntegrityError):
            await writer.flush()
        assert [tuple(r) for r in await fetch_all(conn, "SELECT count(*) FROM images")] == [(0,)]
        assert writer.failure is not None and writer.pending == 2  # kept for a later try
        await conn.close()
    run(go())


def test_every_command_is_reachable_and_status_loads_no_stage_stack():
    """The CLI imports a command's module only when it runs: the lazy map must name every
    command each module defines, and a read-only command must not pull in the heavy stacks."""
    import importlib
    import subprocess
    import sys

    from amlc.cli import COMMAND_MODULES, main

    defined = {c.name: module for module in set(COMMAND_MODULES.values())
               for c in importlib.import_module(f"amlc.cli.{module}").COMMANDS}
    assert defined == COMMAND_MODULES
    assert all(main.get_command(None, name).name == name for name in defined)
    probe = ("import sys; from amlc.cli import main; main.get_command(None, 'status'); "
             "print(sorted(m for m in ('numpy', 'aiohttp', 'PIL', 'onnxruntime', 'llama_cpp') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded


def test_the_cli_reference_is_the_commands_own_help():
    import subprocess
    import sys
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    # a fresh interpreter, as the documented command runs: click keeps each command's help
    # option once built, and tests here invoke some commands without the group's -h
    fresh = subprocess.run([sys.executable, "-m", "amlc.cli.reference"], capture_output=True, text=True,
                           check=True).stdout
    assert page == fresh, "docs/cli.md is stale: run python -m amlc.cli.reference > docs/cli.md"
    assert "## amlc report" in page and "--per-kind" in page


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules that module `name` (file `path`) imports, anywhere in it."""
    import ast
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {name}


def test_no_two_modules_import_each_other():
    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "amlc").rglob("*.py")}
    edges = {name: _imports(path, name, set(files)) for name, path in files.items()}
    assert edges["amlc.demo.run"] >= {"amlc.demo.llm_steps", "amlc.demo.sizes"}   # the walk sees imports
    assert [(a, b) for a, deps in edges.items() for b in deps if a < b and a in edges[b]] == []


def test_a_work_folder_named_with_query_characters_is_read_where_it_is(tmp_path):
    """'?' and '#' in the folder's path would end an unescaped URI's file name early: the
    read-only connection then opened (and created) another file, read-write."""
    work = tmp_path / "runs?mode=rwc#1"
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("index,image_link,group_id,entity_name\n0,https://x.test/a.jpg,1,width\n")
    amlc(work, "ingest", str(csv_path), "--split", "test")
    status = json.loads(amlc(work, "status", "--json").output)
    assert status["splits"] == [{"split": "test", "samples": 1, "images": 1, "labelled": 0}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs?mode=rwc#1", "test.csv"]   # no stray store

    async def write_through_reader():
        reader = await open_reader(work / "amlc.db")
        try:
            await reader.execute("DELETE FROM samples")
        finally:
            await reader.close()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        asyncio.run(write_through_reader())
