"""H&M Personalized Fashion Recommendations (`kaggle://competitions/h-and-m-personalized-fashion-
recommendations`, mounted at `/kaggle/input/h-and-m-personalized-fashion-recommendations/`):
`articles.csv` (`article_id`, `product_code`, ...) and `images/<first 3 digits>/<article_id>.jpg`
with the id zero-padded to 10 digits (`0108775015` -> `images/010/0108775015.jpg`); the CSV
stores it without the leading zero. Not every article has an image: those rows are dropped by
data-prep's existence pass.

Label: `product_code` (the colour variants of one product form a class), or any other column of
articles.csv via `label_column` (`article_id`: every article its own class).
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceImage, read_csv_columns, require_dir


def hm_path(image_dir: Path, article_id: str) -> Path:
    padded = article_id.zfill(10)
    return image_dir / padded[:3] / f"{padded}.jpg"


def read_hm(root: str | Path, source: str = "hm", csv_name: str = "articles.csv", image_dir: str = "images",
            label_column: str = "product_code") -> Listing:
    root = require_dir(Path(root), "hm root")
    images = require_dir(root / image_dir, "hm images")
    listing = Listing([])
    for r in read_csv_columns(root / csv_name, ("article_id", label_column)):
        article = r["article_id"].strip()
        if not article.isdigit():
            listing.skipped.append({"path": article, "reason": "malformed article_id"})
            continue
        listing.images.append(SourceImage(hm_path(images, article), r[label_column].strip(), article.zfill(10), source))
    return listing
