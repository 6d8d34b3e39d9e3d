"""What a model learned from, carried from its SFT data to its GGUF and into the store.

`amlc sft-data` (and `amlc llm-bench`) write ORIGIN beside the JSONL: the labelled CSVs (name
and sha256) and the store splits the rows came from, and the seed of the split by image that
kept the validation half out of training. `amlc train` copies it into its run folder,
`amlc export-model` beside every GGUF (`<model>.origin.json`), and the predict stage records it
in the store when it starts. `amlc eval` then knows which of a split's rows a model's answers
were trained or fitted on (the rules+model weight is fitted on the training half too), so its
score there is printed, marked, and never taken by `amlc export` as evidence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

ORIGIN = "origin.json"


def data_origin(files: Sequence[Path], store: Path | None, splits: Sequence[str], seed: int) -> dict[str, Any]:
    from ..extract.rebuild import sha256_of

    return {"files": [{"name": Path(f).name, "sha256": sha256_of(Path(f))} for f in files],
            "store": str(Path(store).resolve()) if store and splits else None,
            "splits": list(splits), "seed": seed}


def write_origin(folder: Path, origin: dict[str, Any]) -> Path:
    path = Path(folder) / ORIGIN
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(origin, indent=2), encoding="utf-8")
    return path


def model_origin_path(model: Path) -> Path:
    return Path(model).with_name(Path(model).stem + ".origin.json")


def copy_origin(data_folder: Path, to: Path) -> None:
    """Carry ORIGIN from `data_folder` to the file `to`, where there is one."""
    source = Path(data_folder) / ORIGIN
    if source.exists():
        shutil.copyfile(source, to)


def model_origin(model: Path) -> dict[str, Any] | None:
    """What the GGUF `model` was trained on, or None where nobody recorded it."""
    path = model_origin_path(model)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
