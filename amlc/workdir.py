"""The work folder every command shares: the store, images, models and exports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
