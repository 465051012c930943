"""Google Landmarks v2: `train.csv` (`id,landmark_id`), images at `train/<i0>/<i1>/<i2>/<id>.jpg`."""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceImage, read_csv_columns, require_dir


def gldv2_path(image_dir: Path, image_id: str) -> Path:
    return image_dir / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def read_gldv2(root: str | Path, source: str = "gldv2", csv_name: str = "train.csv",
               image_dir: str = "train") -> Listing:
    root = require_dir(Path(root), "gldv2 root")
    images = require_dir(root / image_dir, "gldv2 images")
    rows = read_csv_columns(root / csv_name, ("id", "landmark_id"))
    listing = Listing([])
    for r in rows:
        if len(r["id"]) < 3:  # the layout needs three characters to find the file
            listing.skipped.append({"path": r["id"], "reason": "malformed image id"})
        else:
            listing.images.append(SourceImage(gldv2_path(images, r["id"]), r["landmark_id"], r["id"], source))
    return listing
