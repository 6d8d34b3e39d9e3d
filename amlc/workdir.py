"""The work folder every command shares: the store, images, models and exports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_WORKDIR = "amlc-work"


@dataclass(frozen=True)
class Workdir:
    root: Path

    @classmethod
    def resolve(cls, given: str | os.PathLike[str] | None = None) -> "Workdir":
        """--workdir, else AMLC_WORKDIR, else ./amlc-work."""
        return cls(Path(given or os.environ.get("AMLC_WORKDIR") or DEFAULT_WORKDIR).resolve())

    @property
    def store(self) -> Path:
        return self.root / "amlc.db"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def run_lock(self) -> Path:
        return self.root / "run.lock"


def path_in_store(path: Path, root: Path) -> str:
    """A file's path as the store keeps it: relative to the work folder when inside it, so the
    folder can move."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def moved_image_path(stored: str) -> str:
    """An older store's absolute image path, `/old/place/images/ab/abcd.jpg`, as the store keeps
    it now, `images/ab/abcd.jpg`: content-addressed files keep their last three path parts
    wherever the work folder is."""
    parts = PurePosixPath(stored).parts
    return str(PurePosixPath(*parts[-3:])) if len(parts) >= 3 and parts[-3] == "images" else stored
