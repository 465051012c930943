"""Products-10K (products-10k.github.io; not on Kaggle as a competition: the presets expect it
uploaded as your own dataset `kaggle://datasets/{owner}/products-10k`, mounted at
`/kaggle/input/products-10k/`): `train.csv` (`name,class,group`) with images in `train/<name>`.
Label: `class` (9,691 SKUs)."""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceImage, read_csv_columns, require_dir


def read_products10k(root: str | Path, source: str = "products10k", csv_name: str = "train.csv",
                     image_dir: str = "train") -> Listing:
    root = require_dir(Path(root), "products10k root")
    images = require_dir(root / image_dir, "products10k images")
    rows = read_csv_columns(root / csv_name, ("name", "class"))
    return Listing([SourceImage(images / r["name"], r["class"], r["name"], source) for r in rows])
