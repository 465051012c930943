"""The unit every source reader yields: one image file with its source-local class."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceImage:
    path: Path
    label: str  # the class as the source names it
    image_id: str  # the source's own id for the image
    source: str  # the source's name in the manifest
    offset: int = -1  # >= 0: the image is the record at this byte offset of the TFRecord `path`
    domain: str = ""  # a finer validation domain than the source (GPR1200's six); "" = the source

    @property
    def uid(self) -> str:
        """A 16-character id, unique across sources: the Kaggle solution-file format."""
        return hashlib.sha1(f"{self.source}/{self.image_id}".encode()).hexdigest()[:16]


@dataclass
class Listing:
    """What a reader found: the images, and entries it could not use with their reasons."""

    images: list[SourceImage]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    listed: int = 0  # images the source listed, before data-prep's existence pass
    missing: int = 0  # of those, not on disk (data-prep's existence pass)


class SourceError(ValueError):
    """A source is unusable as configured (wrong root, missing CSV, missing columns)."""


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SourceError(f"{what}: directory not found: {path}")
    return path


def find_file(root: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of `names` (relative paths) that exists under `root`; SourceError naming them all."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise SourceError(f"{what}: none of {list(names)} found under {root}")


def read_csv_columns(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; a clear error when the file or a required column is missing."""
    if not path.is_file():
        raise SourceError(f"CSV file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise SourceError(f"{path}: missing column(s) {missing}; header is {header}")
        return list(reader)
