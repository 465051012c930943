"""Adapters for the extra datasets the top solutions added: folder-per-class and a `path,label` CSV."""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, read_csv_columns, require_dir


def read_folder(root: str | Path, source: str = "folder") -> Listing:
    """`root/<class>/<any depth>/<file>`: every non-hidden file; non-images are skipped later."""
    root = require_dir(Path(root), "folder root")
    listing = Listing([])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts):
                listing.images.append(SourceImage(f, folder.name, f.relative_to(root).as_posix(), source))
    if not listing.images:
        raise SourceError(f"folder: no class folders with files under {root}")
    return listing


def read_csv(root: str | Path, source: str = "csv", csv_name: str = "train.csv", path_column: str = "path",
             label_column: str = "label", image_dir: str = "") -> Listing:
    """`root` is the CSV itself or a folder holding `csv_name`; relative paths start at the CSV's
    folder (or `image_dir` under it)."""
    root = Path(root)
    csv_path = root if root.is_file() else require_dir(root, "csv root") / csv_name
    base = csv_path.parent / image_dir
    rows = read_csv_columns(csv_path, (path_column, label_column))
    listing = Listing([])
    for r in rows:
        path, label = (r[path_column] or "").strip(), (r[label_column] or "").strip()
        if not path or not label:
            listing.skipped.append({"path": path or str(csv_path), "reason": "CSV row without path or label"})
            continue
        listing.images.append(SourceImage(base / path, label, path, source))
    return listing
