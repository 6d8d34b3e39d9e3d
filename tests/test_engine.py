"""`amlc run` end to end against the local image server: faults, resume after kill -9, stop."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from http_server import DEFAULT_ROOT
from store_helpers import amlc, amlc_json, query, start_run, wait_for, write_csv

IMAGES = sorted(p.name for p in DEFAULT_ROOT.glob("*.jpg"))
HEADER = ["index", "image_link", "group_id", "entity_name"]
FAST = ["--no-dashboard", "--exit-when-done", "--timeout", "1", "--fetch-retries", "1",
        "--backoff", "0.05", "--max-attempts", "2", "--ocr-batch", "4"]


def rows_for(server, paths: list[str], entity: str = "item_weight") -> list[list]:
    return [[i, server.url(path), "123", entity] for i, path in enumerate(paths)]


def states(store: Path) -> dict[str, tuple]:
    """image link -> (fetch state, attempts, last error, ocr state)."""
    return {link: rest for link, *rest in query(store, """
        SELECT i.link, f.state, f.attempts, f.last_error, o.state FROM images i
        JOIN jobs f ON f.stage = 'fetch' AND f.item_id = i.id
        LEFT JOIN jobs o ON o.stage = 'ocr' AND o.item_id = i.id""")}


def test_every_fault_ends_in_the_right_state_and_nothing_else_is_affected(tmp_path, image_server):
    good = [f"/images/I/{name}" for name in IMAGES[:4]]
    inner = f"/images/I/{IMAGES[5]}"
    faults = {
        "404": "failed http 404", "500x2": "done", "429x1": "done", "stall": "failed timeout",
        "truncate": "failed truncated", "html": "failed not an image", "huge": "failed too large",
    }
    paths = good + [f"/fault/{spec}{inner}" for spec in faults] + [good[0]]  # a duplicate link
    csv_file = write_csv(tmp_path / "in.csv", HEADER, rows_for(image_server, paths))
    amlc(tmp_path, "ingest", str(csv_file), "--split", "t")
    amlc(tmp_path, "run", *FAST)

    got = states(tmp_path / "amlc.db")
    for path in good:
        assert got[image_server.url(path)][0] == "done"
        assert got[image_server.url(path)][3] == "done"
        assert image_server.hits[path] == 1  # the duplicate link downloaded once
    for spec, expected in faults.items():
        state, attempts, error, ocr = got[image_server.url(f"/fault/{spec}{inner}")]
        assert f"{state} {error or ''}".startswith(expected), (spec, state, error)
        assert (ocr == "done") == (state == "done")
    assert got[image_server.url("/fault/404" + inner)][1] == 1  # permanent: no retry
    assert got[image_server.url("/fault/stall" + inner)][1] == 2  # transient: the retry budget
    # every OCR'd sample has an answer from the rules, valid for its entity
    summary = amlc_json(tmp_path, "status")
    assert summary["stages"]["extract"] == {"done": len(good) + 3}
    out = tmp_path / "sub.csv"
    amlc(tmp_path, "export", str(out), "--split", "t")
    assert len(out.read_text().splitlines()) == len(paths) + 1


def test_kill_9_mid_run_then_resume_repeats_only_work_in_flight(tmp_path, image_server):
    image_server.add_fault("/images/I/", "slow")  # 1 s per download keeps the run mid-flight
    paths = [f"/images/I/{name}" for name in IMAGES[:40]]  # 20 s of downloads: OCR starts meanwhile
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "in.csv", HEADER, rows_for(image_server, paths))),
         "--split", "t")
    store = tmp_path / "amlc.db"
    concurrency, batch = 2, 2
    run_args = ["--concurrency", str(concurrency), "--ocr-batch", str(batch)]
    first = start_run(tmp_path, *run_args)
    wait_for(store, "SELECT count(*) FROM jobs WHERE stage = 'ocr' AND state = 'done'", 2)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    fetched_before = {link for (link,) in query(store, """SELECT i.link FROM images i JOIN jobs j
        ON j.stage = 'fetch' AND j.item_id = i.id WHERE j.state = 'done'""")}
    ocr_before = set(query(store, "SELECT image_id, created_at FROM ocr_results"))
    assert len(fetched_before) < len(paths), "the kill came too late to test resuming"

    second = start_run(tmp_path, *run_args, "--exit-when-done")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert query(store, "SELECT stage, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1") == [
        ("extract", "done", 40), ("fetch", "done", 40), ("ocr", "done", 40)]
    assert query(store, "SELECT count(*) FROM predictions") == [(40,)]
    # no finished download or OCR ran again; only what was in flight at the kill may have
    for path in paths:
        assert image_server.hits[path] == 1 or image_server.url(path) not in fetched_before
    # what the kill can repeat: the downloads on the connections, and those finished in the
    # writer's last 250 ms that it had not committed yet (at 1 s a download, one per connection)
    assert len([p for p in paths if image_server.hits[p] > 1]) <= 2 * concurrency
    assert all(image_server.hits[p] <= 2 for p in paths)
    assert ocr_before <= set(query(store, "SELECT image_id, created_at FROM ocr_results"))


def test_a_second_run_is_refused_and_sigterm_drains_cleanly(tmp_path, image_server):
    image_server.add_fault("/images/I/", "slow")
    paths = [f"/images/I/{name}" for name in IMAGES[30:40]]
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "a.csv", HEADER, rows_for(image_server, paths[:5]))),
         "--split", "t")
    daemon = start_run(tmp_path, "--stages", "fetch", "--concurrency", "2")
    store = tmp_path / "amlc.db"
    wait_for(store, "SELECT count(*) FROM jobs WHERE stage = 'fetch' AND state = 'done'", 1)

    refused = amlc(tmp_path, "run", "--exit-when-done", "--no-dashboard", ok=False)
    assert refused.exit_code == 1 and "already working on" in refused.output

    # the running daemon picks up rows ingested while it runs
    more = [[i + 5, image_server.url(p), "1", "width"] for i, p in enumerate(paths[5:])]
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "b.csv", HEADER, more)), "--split", "t")
    wait_for(store, "SELECT count(*) FROM jobs WHERE stage = 'fetch' AND state = 'done'", 7)

    daemon.send_signal(signal.SIGTERM)
    output, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, output
    assert "run finished" in output
    assert query(store, "SELECT count(*) FROM jobs WHERE state = 'leased'") == [(0,)]


def test_images_already_on_disk_are_used_instead_of_downloads(tmp_path, image_server):
    paths = [f"/fault/404/images/I/{name}" for name in IMAGES[50:53]]  # the server would refuse them
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "in.csv", HEADER, rows_for(image_server, paths))),
         "--split", "t")
    amlc(tmp_path, "run", *FAST, "--stages", "fetch", "--local-images", str(DEFAULT_ROOT))
    assert {s[0] for s in states(tmp_path / "amlc.db").values()} == {"done"}
    assert sum(image_server.hits.values()) == 0
    sizes = query(tmp_path / "amlc.db", "SELECT size FROM images ORDER BY link")
    assert sorted(s for (s,) in sizes) == sorted((DEFAULT_ROOT / n).stat().st_size for n in IMAGES[50:53])


def test_real_test_images_end_to_end_give_answers_our_checker_passes(tmp_path, image_server):
    """Rows of the official test.csv whose images are in shared/data: download, OCR (with the
    preprocessing asked for, recorded), rules, export, and `amlc check` on every answer."""
    wanted = set(IMAGES[60:80])
    test_csv = DEFAULT_ROOT.parent / "test.csv"
    lines = test_csv.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",")[1].rsplit("/", 1)[-1] in wanted]
    subset = tmp_path / "test_subset.csv"
    subset.write_text("\n".join([lines[0], *rows]) + "\n")
    served = tmp_path / "served.csv"
    served.write_text(subset.read_text().replace("https://m.media-amazon.com", image_server.base))
    amlc(tmp_path, "ingest", str(served), "--split", "test")
    amlc(tmp_path, "run", *FAST, "--ocr-max-side", "1024", "--ocr-autocontrast")

    store = tmp_path / "amlc.db"
    assert query(store, "SELECT stage, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1") == [
        ("extract", "done", len(rows)), ("fetch", "done", len(wanted)), ("ocr", "done", len(wanted))]
    recorded = {p for (p,) in query(store, "SELECT preprocess FROM ocr_results")}
    assert all('"max_side": 1024' in p and '"autocontrast": true' in p for p in recorded)
    # thumbnails are enlarged to 800 px by default, larger images read at their size or shrunk
    sizes = [(max(r["original_size"]), max(r["size"])) for r in map(json.loads, recorded)]
    assert any(original < 800 for original, _ in sizes) and any(original > 800 for original, _ in sizes)
    assert all(read == (800 if original < 800 else min(original, 1024)) for original, read in sizes), sizes
    with_text = query(store, "SELECT count(*) FROM ocr_results WHERE text != ''")[0][0]
    assert with_text >= 0.8 * len(wanted)
    out = tmp_path / "submission.csv"
    amlc(tmp_path, "export", str(out), "--split", "test")
    result = amlc_json(tmp_path, "check", str(out), "--against", str(subset))
    assert result["ok"] and result["rows"] == len(rows) and result["answered"] > 0


def test_a_row_that_raises_fails_alone_and_the_rest_of_its_batch_is_done(tmp_path):
    """Six samples in one extract batch; one image's stored OCR is not readable JSON. Only its
    sample fails, with its own error; the other five are answered in the same run."""
    import json
    import time

    from store_helpers import execute
    rows = [[i, f"https://x.test/{i}.jpg", 1, "item_weight"] for i in range(6)]
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "t.csv", ["index", "image_link", "group_id", "entity_name"],
                                           rows)), "--split", "test")
    store = tmp_path / "amlc.db"
    lines = json.dumps({"engine": "rapidocr", "lines": [{"text": "NET WT 250g", "confidence": 0.99,
                                                         "box": [[0, 0], [9, 0], [9, 9], [0, 9]]}]})
    execute(store, "INSERT INTO ocr_results(image_id, engine, lines, text, preprocess, created_at) "
                   "SELECT id, 'rapidocr', ?, 'NET WT 250g', '{}', ? FROM images WHERE link = ?",
            [(lines if i != 3 else '{"lines": [', time.time(), f"https://x.test/{i}.jpg") for i in range(6)])
    execute(store, "UPDATE jobs SET state = 'done' WHERE stage = 'fetch'", [()])   # makes the OCR jobs
    execute(store, "UPDATE jobs SET state = 'done' WHERE stage = 'ocr'", [()])     # makes the extract jobs
    amlc(tmp_path, "run", "--stages", "extract", "--exit-when-done", "--no-dashboard", "--max-attempts", "1")
    states = dict(query(store, "SELECT s.idx, j.state || ' ' || coalesce(j.last_error, '') FROM jobs j "
                               "JOIN samples s ON s.id = j.item_id WHERE j.stage = 'extract'"))
    assert {idx: state.split()[0] for idx, state in states.items()} == {
        0: "done", 1: "done", 2: "done", 3: "failed", 4: "done", 5: "done"}
    assert "JSONDecodeError" in states[3]
    assert query(store, "SELECT count(*) FROM predictions WHERE prediction IN ('250 gram', '250.0 gram')") == [(5,)]


@pytest.mark.parametrize("sides, why", [
    (["--ocr-max-side", "640"], "min_side 800 is above max_side 640"),
    (["--ocr-min-side", "10"], "min_side must be at least 32 pixels, got 10"),
])
def test_image_sizes_the_ocr_cannot_use_are_refused_before_anything_starts(tmp_path, sides, why):
    result = amlc(tmp_path, "run", "--exit-when-done", "--no-dashboard", *sides, ok=False)
    assert result.exit_code == 2
    assert "--ocr-max-side / --ocr-min-side: " + why in result.output
    assert not (tmp_path / "amlc.db").exists()
