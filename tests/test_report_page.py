"""`amlc report` and `amlc show --image` on real photos read by real OCR: every wrong row with
its kind, the stored boxes drawn, the least sure first, and a page that Chromium renders."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from amlc.extract.baseline import truth_in_text
from amlc.metric import error_kind
from images import DATA, TEST_IMAGES
from store_helpers import amlc, amlc_json, query

DIM_PHOTOS = DATA / "dim_photos"
needs_data = pytest.mark.skipif(not DIM_PHOTOS.exists(), reason="shared data not mounted")
RUN = ("run", "--exit-when-done", "--no-dashboard", "--ocr-workers", "1")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _subset(source: Path, out: Path, rows: int, keep=lambda row: True) -> Path:
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        kept = [r for r in reader if keep(r)][:rows]
        fields = reader.fieldnames
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(kept)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder holding 8 labelled dimension photos (split 'dims') and 5 unlabelled test
    photos (split 'test'), downloaded from local files, OCR'd and answered by `amlc run`."""
    work = tmp_path_factory.mktemp("report")
    dims = _subset(DATA / "dim_photos.csv", work / "dims.csv", 8)
    amlc(work, "ingest", str(dims), "--split", "dims")
    amlc(work, *RUN, "--local-images", str(DIM_PHOTOS))
    on_disk = {p.name for p in TEST_IMAGES.glob("*.jpg")}
    test = _subset(DATA / "test.csv", work / "test.csv", 5, lambda r: r["image_link"].rsplit("/", 1)[-1] in on_disk)
    amlc(work, "ingest", str(test), "--split", "test")
    amlc(work, *RUN, "--local-images", str(TEST_IMAGES))
    return work


def _cards(page: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'data-(\w+)="([^"]*)"', m)) for m in re.findall(r'<div class="card" ([^>]*)>', page)]


@needs_data
def test_the_page_lists_every_wrong_row_with_its_kind(work: Path) -> None:
    facts = amlc_json(work, "report", "--split", "dims")
    page = Path(facts["out"]).read_text(encoding="utf-8")
    rows = query(work / "amlc.db", """
        SELECT s.idx, s.entity, s.raw_label, p.prediction, o.text FROM samples s
        JOIN predictions p ON p.sample_id = s.id AND p.source = 'rules'
        JOIN ocr_results o ON o.image_id = s.image_id WHERE s.split = 'dims'""")
    expected = {}
    for idx, entity, label, answer, text in rows:
        kind = error_kind(entity, label, answer)
        if kind and kind != "blank" and not truth_in_text(entity, label, text):
            kind = "truth not in the text"
        expected[str(idx)] = kind or "right"
    shown = {card["idx"]: card["kind"] for card in _cards(page)}
    assert shown == expected and len(shown) == 8
    assert sum(n for kind, n in facts["kinds"].items() if kind != "right") == \
        sum(kind != "right" for kind in expected.values())
    assert "entities absent from this split:" in page and "item_weight" in page.split("entities absent")[1][:200]


@needs_data
def test_the_boxes_drawn_are_the_stored_boxes(work: Path) -> None:
    page = Path(amlc_json(work, "report", "--split", "dims")["out"]).read_text(encoding="utf-8")
    idx, lines = query(work / "amlc.db", """
        SELECT s.idx, o.lines FROM samples s JOIN ocr_results o ON o.image_id = s.image_id
        WHERE s.split = 'dims' ORDER BY s.idx LIMIT 1""")[0]
    card = page.split(f'data-idx="{idx}"', 1)[1].split('<div class="card"', 1)[0]
    drawn = [[tuple(float(v) for v in point.split(",")) for point in points.split()]
             for points in re.findall(r'class="ocr-box" points="([^"]+)"', card)]
    stored = [[tuple(point) for point in line["box"]] for line in json.loads(lines)["lines"]]
    assert drawn == stored and drawn


@needs_data
def test_the_candidates_name_the_line_drawn_beside_them(work: Path) -> None:
    """The drawings' measuring lines found by `amlc run` appear beside the candidates, and a
    card names only directions its own photo's lines have."""
    page = Path(amlc_json(work, "report", "--split", "dims")["out"]).read_text(encoding="utf-8")
    rows = query(work / "amlc.db", """
        SELECT s.idx, o.lines FROM samples s JOIN ocr_results o ON o.image_id = s.image_id
        WHERE s.split = 'dims'""")
    guided = {str(idx): {line.get("guide", "") for line in json.loads(lines)["lines"]} - {""} for idx, lines in rows}
    assert any("vertical" in g for g in guided.values())
    for idx, guides in guided.items():
        card = page.split(f'data-idx="{idx}"', 1)[1].split('<div class="card"', 1)[0]
        named = set(re.findall(r"<small>beside an? (upright|level|slanted) line</small>", card))
        assert named <= {{"vertical": "upright", "horizontal": "level", "slanted": "slanted"}[g] for g in guides}
    assert "beside an upright line" in page


@needs_data
def test_an_unlabelled_split_shows_the_least_sure_first(work: Path) -> None:
    page = Path(amlc_json(work, "report", "--split", "test")["out"]).read_text(encoding="utf-8")
    confidences = [float(card["confidence"]) for card in _cards(page)]
    assert len(confidences) == 5 and confidences == sorted(confidences)
    assert {card["kind"] for card in _cards(page)} == {"unlabelled"}


@needs_data
def test_the_gallery_holds_a_bounded_number_of_rows_per_kind(work: Path) -> None:
    facts = amlc_json(work, "report", "--split", "dims", "--per-kind", "1")
    page = Path(facts["out"]).read_text(encoding="utf-8")
    assert len(_cards(page)) == len(facts["kinds"])
    assert f"({8 - len(facts['kinds'])} left out)" in page


@needs_data
def test_show_draws_the_chosen_answers_box_in_red(work: Path, tmp_path: Path) -> None:
    idx, lines, answer = query(work / "amlc.db", """
        SELECT s.idx, o.lines, p.prediction FROM samples s JOIN ocr_results o ON o.image_id = s.image_id
        JOIN predictions p ON p.sample_id = s.id WHERE s.split = 'dims' AND p.prediction != ''
        ORDER BY s.idx LIMIT 1""")[0]
    out = tmp_path / "row.png"
    amlc(work, "show", str(idx), "--split", "dims", "--image", str(out))
    number = float(answer.split()[0])  # the line that holds this very number ('6"', not '15.6"')
    box = next(line["box"] for line in json.loads(lines)["lines"]
               if number in {float(n) for n in re.findall(r"\d+(?:\.\d+)?", line["text"])})
    with Image.open(out) as img:
        x, y = box[0]
        red = [img.getpixel((int(x) + dx, int(y) + dy)) for dx in range(-2, 3) for dy in range(-2, 3)
               if 0 <= int(x) + dx < img.width and 0 <= int(y) + dy < img.height]
    assert any(r > 200 and g < 80 and b < 140 for r, g, b in red)


@needs_data
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_page_renders_in_headless_chromium_without_console_errors(work: Path, tmp_path: Path) -> None:
    page = Path(amlc_json(work, "report", "--split", "dims")["out"])
    shot = tmp_path / "shot.png"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1000,1400", f"--screenshot={shot}", "--enable-logging=stderr",
                           "--v=0", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert shot.exists() and not console, done.stderr[-2000:]
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
    dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
    assert len(colours) > 50 and dark > 500   # text and photos drawn, not a blank page
