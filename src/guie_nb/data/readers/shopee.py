"""Shopee - Price Match Guarantee (`kaggle://competitions/shopee-product-matching`, mounted at
`/kaggle/input/shopee-product-matching/`): `train.csv` with `posting_id,image,image_phash,title,
label_group` and the images in `train_images/<image>`. Label: `label_group` (postings of the
same product); id: `posting_id`.

The same image file is posted more than once (34,250 postings, fewer distinct files): a file
already listed is skipped with its reason, so no image is both query and index of itself.
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceImage, read_csv_columns, require_dir


def read_shopee(root: str | Path, source: str = "shopee", csv_name: str = "train.csv",
                image_dir: str = "train_images") -> Listing:
    root = require_dir(Path(root), "shopee root")
    images = require_dir(root / image_dir, "shopee images")
    listing, seen = Listing([]), set()
    for r in read_csv_columns(root / csv_name, ("posting_id", "image", "label_group")):
        if r["image"] in seen:
            listing.skipped.append({"path": str(images / r["image"]),
                                    "reason": "same image file as an earlier posting"})
            continue
        seen.add(r["image"])
        listing.images.append(SourceImage(images / r["image"], r["label_group"], r["posting_id"], source))
    return listing
