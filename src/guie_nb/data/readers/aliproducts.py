"""AliProducts (the CVPR 2020 AliProducts Challenge, from Alibaba's Tianchi; not on Kaggle as far
as we know): `train.json` = `{"images": [{"image_id": "<file>.jpg", "class_id": "<class>"}, ...]}`
with the images at `train/<class_id>/<image_id>` (the extracted `train_val.part*.tar.gz`). Label:
`class_id` (50,030 SKUs).
"""

from __future__ import annotations

import json
from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, find_file, require_dir


def read_aliproducts(root: str | Path, source: str = "aliproducts", json_name: str = "train.json",
                     image_dir: str = "train") -> Listing:
    root = require_dir(Path(root), "aliproducts root")
    images = require_dir(root / image_dir, "aliproducts images")
    path = find_file(root, (json_name,), "aliproducts annotations")
    try:
        entries = json.loads(path.read_text()).get("images")
    except (ValueError, AttributeError) as e:
        raise SourceError(f"{path}: expected JSON {{'images': [...]}} ({e})") from e
    if not isinstance(entries, list):
        raise SourceError(f"{path}: expected JSON {{'images': [...]}}")
    listing = Listing([])
    for e in entries:
        image_id, class_id = str(e.get("image_id", "")), str(e.get("class_id", ""))
        if not image_id or not class_id:
            listing.skipped.append({"path": str(path), "reason": "annotation without image_id or class_id"})
            continue
        listing.images.append(SourceImage(images / class_id / image_id, class_id, image_id, source))
    return listing
