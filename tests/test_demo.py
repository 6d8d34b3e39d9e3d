"""`amlc demo`: the shipped distributions, the label renderer, and a tiny demo end to end
(rendered labels served locally -> ingest -> fetch/OCR/rules -> tiny LoRA -> GGUF -> predictions
-> checked submission and F1 table), then its resume."""

from __future__ import annotations

import io
import json
import random
import socket
from pathlib import Path

import pytest
from PIL import Image

from amlc.check import check_submission
from amlc.demo import render
from amlc.demo.distributions import Distributions, build_table
from amlc.demo.render import render_label
from amlc.units import ENTITY_UNITS, parse_label
from store_helpers import amlc, query


def test_shipped_table_covers_every_entity_and_samples_valid_labels() -> None:
    dist = Distributions.load()
    assert dist.entities == sorted(ENTITY_UNITS)
    rng = random.Random(0)
    labels = [dist.sample(rng) for _ in range(300)]
    for label in labels:
        assert str(parse_label(label.answer, label.entity)) == label.answer  # canonical and allowed
    assert {l.entity for l in labels} >= {"item_weight", "depth", "width", "height"}


def test_table_is_built_from_train_rows_dropping_unusable_labels(tmp_path: Path) -> None:
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("image_link,group_id,entity_name,entity_value\n"
                        "a,1,item_weight,500.0 gram\nb,1,item_weight,500 gram\nc,2,item_weight,2 kilogram\n"
                        "d,3,voltage,\"[100.0, 240.0] volt\"\ne,3,item_volume,5 ounce\n")
    table = build_table(csv_file)
    assert table["item_weight"]["units"]["gram"]["values"] == {"500": 2}
    assert table["item_weight"]["groups"] == {"1": 2, "2": 1}
    assert table["voltage"]["units"]["volt"]["values"] == {"240": 1}  # a range's upper bound
    assert "item_volume" not in table  # 'ounce' is not a volume unit


@pytest.mark.parametrize("fonts", ["machine", "pillow"])
def test_rendered_label_is_an_image_carrying_the_value_among_distractors(
        fonts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if fonts == "pillow":  # a machine without TrueType fonts falls back to Pillow's own
        monkeypatch.setattr(render, "font_files", lambda: ())
    dist, rng = Distributions.load(), random.Random(1)
    for _ in range(5):
        label = dist.sample(rng)
        data, lines = render_label(label, rng)
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and min(image.size) >= 300
        assert sum(label.value in line for line in lines) >= 1 and len(lines) >= 3


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_resumes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    out = amlc(work, "demo", "--size", "tiny").output
    assert "F1 on val" in out and "rules" in out and "tiny-lora" in out, out
    states = query(work / "amlc.db", "SELECT stage, state, count(*) FROM jobs GROUP BY 1, 2")
    assert {(s.split("@")[0], st) for s, st, _ in states} == {
        ("fetch", "done"), ("ocr", "done"), ("extract", "done"), ("predict:tiny-lora", "done")}
    val_test = query(work / "amlc.db", "SELECT count(*) FROM samples WHERE split IN ('val', 'test')")[0][0]
    answered = query(work / "amlc.db", "SELECT count(*) FROM predictions p JOIN samples s ON s.id = p.sample_id "
                                       "WHERE p.source = 'tiny-lora' AND s.split IN ('val', 'test')")[0][0]
    assert answered == val_test
    submission, test_csv = work / "submission.csv", work / "demo" / "test.csv"
    assert check_submission(submission, test_csv).ok
    assert "OK" in amlc(work, "check", str(submission), "--against", str(test_csv)).output
    answered_at = query(work / "amlc.db", "SELECT max(created_at), count(*) FROM predictions")
    again = amlc(work, "demo", "--size", "tiny").output  # everything done: nothing is redone
    assert "train 0 new/" in again and "fetch 0 done" in again, again
    assert query(work / "amlc.db", "SELECT max(created_at), count(*) FROM predictions") == answered_at
    assert amlc(work, "demo", "--size", "small", ok=False).exit_code != 0  # one demo per work folder
    _relinked_when_the_old_port_is_taken(work)


def _relinked_when_the_old_port_is_taken(work: Path) -> None:
    """A resumed demo whose port is now taken serves on another one and relinks the store."""
    old = json.loads((work / "demo" / "server.json").read_text())["port"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", old))
        taken.listen()
        amlc(work, "demo", "--size", "tiny", "--skip-llm")
    new = json.loads((work / "demo" / "server.json").read_text())["port"]
    links = query(work / "amlc.db", "SELECT link FROM images")
    assert new != old and all(link.startswith(f"http://127.0.0.1:{new}/images/I/") for (link,) in links)
