"""The demo's dataset: rendered label images and train/val/test CSVs with the official headers.

The labels (manifest.json) are drawn once from a seed; CSV links point at the local server's port,
and are rewritten when a resumed demo has to serve on another port.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from .distributions import Distributions, Label
from .render import render_label

SPLITS = ("train", "val", "test")
HEADERS = {  # train.csv has no index (as the official file); val is a labelled test-like file
    "train": ("image_link", "group_id", "entity_name", "entity_value"),
    "val": ("index", "image_link", "group_id", "entity_name", "entity_value"),
    "test": ("index", "image_link", "group_id", "entity_name"),
}


@dataclass(frozen=True)
class Item:
    split: str
    index: int
    name: str      # image file name under images/
    label: Label


def render_dataset(folder: Path, counts: dict[str, int], seed: int) -> list[Item]:
    """Render every split's images into folder/images and write folder/manifest.json last,
    so a manifest means a complete dataset (a rerun after an interruption renders again)."""
    manifest = folder / "manifest.json"
    if manifest.exists():
        return load_items(manifest)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    dist, rng = Distributions.load(), random.Random(seed)
    items = []
    for split in SPLITS:
        for index in range(counts[split]):
            item = Item(split, index, f"{split}-{index:05d}.jpg", dist.sample(rng))
            data, _ = render_label(item.label, rng)
            (images / item.name).write_bytes(data)
            items.append(item)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(i) for i in items]), encoding="utf-8")
    tmp.replace(manifest)
    return items


def load_items(manifest: Path) -> list[Item]:
    return [Item(d["split"], d["index"], d["name"], Label(**d["label"]))
            for d in json.loads(manifest.read_text(encoding="utf-8"))]


def write_csvs(folder: Path, items: list[Item], base_url: str) -> dict[str, Path]:
    """One CSV per split; links are base_url + file name."""
    paths = {}
    for split in SPLITS:
        path = paths[split] = folder / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(HEADERS[split])
            for item in (i for i in items if i.split == split):
                writer.writerow(_row(item, base_url + item.name, HEADERS[split]))
    return paths


def _row(item: Item, link: str, header: tuple[str, ...]) -> list[str]:
    values = {"index": str(item.index), "image_link": link, "group_id": item.label.group_id,
              "entity_name": item.label.entity, "entity_value": item.label.answer}
    return [values[c] for c in header]
