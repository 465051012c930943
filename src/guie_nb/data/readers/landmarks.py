"""Google Landmarks v2 in its three published layouts. Images are always at
`<image_dir>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg`; the label is `landmark_id`.

- `gldv2`: Kaggle's Landmark Recognition 2021 (`kaggle://competitions/landmark-recognition-2021`,
  mounted at `/kaggle/input/landmark-recognition-2021/`): `train.csv` (`id,landmark_id`, the
  cleaned GLDv2 train set, 1,580,470 images / 81,313 landmarks) and `train/`.
- `gld2020`: Kaggle's Landmark Recognition 2020 (`kaggle://competitions/landmark-recognition-2020`,
  mounted at `/kaggle/input/landmark-recognition-2020/`): the same `train.csv` + `train/` layout
  and, as far as we know, the same cleaned train set; Landmark Retrieval 2020
  (`landmark-retrieval-2020`) mounts its `train.csv` + `train/` the same way.
- `gldv2_full`: the full GLDv2 release (github.com/cvdfoundation/google-landmark, not on Kaggle
  as far as we know): `train_clean.csv` (`landmark_id,images`, the images as space-separated
  ids) or `train.csv` (`id,url,landmark_id`, all 4.1 M images) next to `train/`, the folder the
  `images_XXX.tar` parts are extracted into. Extracting only some parts is normal: listed images
  that are not on disk are dropped by data-prep's existence pass before any class is ranked.
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, read_csv_columns, require_dir


def gldv2_path(image_dir: Path, image_id: str) -> Path:
    return image_dir / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _listing(image_dir: Path, pairs, source: str) -> Listing:
    """(image id, landmark id) pairs -> images; ids too short for the nested layout are skipped."""
    listing = Listing([])
    for image_id, landmark in pairs:
        if len(image_id) < 3:  # the layout needs three characters to find the file
            listing.skipped.append({"path": image_id, "reason": "malformed image id"})
        else:
            listing.images.append(SourceImage(gldv2_path(image_dir, image_id), landmark, image_id, source))
    return listing


def read_gldv2(root: str | Path, source: str = "gldv2", csv_name: str = "train.csv",
               image_dir: str = "train") -> Listing:
    """Kaggle's Landmark Recognition 2021 layout: `train.csv` (`id,landmark_id`) + `train/a/b/c/<id>.jpg`."""
    root = require_dir(Path(root), f"{source} root")
    images = require_dir(root / image_dir, f"{source} images")
    rows = read_csv_columns(root / csv_name, ("id", "landmark_id"))
    return _listing(images, ((r["id"], r["landmark_id"]) for r in rows), source)


def read_gld2020(root: str | Path, source: str = "gld2020", csv_name: str = "train.csv",
                 image_dir: str = "train") -> Listing:
    """Kaggle's Landmark Recognition / Retrieval 2020 layout (the 2021 layout, see the module doc)."""
    return read_gldv2(root, source, csv_name, image_dir)


def read_gldv2_full(root: str | Path, source: str = "gldv2_full", csv_name: str = "",
                    image_dir: str = "train") -> Listing:
    """The full GLDv2 release: `train_clean.csv` (`landmark_id,images`) when present, else `train.csv`
    (`id,url,landmark_id`); `csv_name` picks one. SourceError when neither exists or a column is missing."""
    root = require_dir(Path(root), f"{source} root")
    images = require_dir(root / image_dir, f"{source} images (the extracted images_XXX.tar parts)")
    names = (csv_name,) if csv_name else ("train_clean.csv", "train.csv")
    path = next((root / n for n in names if (root / n).is_file()), None)
    if path is None:
        raise SourceError(f"{source}: CSV file not found: none of {list(names)} in {root}")
    header = path.open(encoding="utf-8-sig").readline()
    if "images" in header.strip().split(","):  # the clean file: one row per landmark
        rows = read_csv_columns(path, ("landmark_id", "images"))
        pairs = ((i, r["landmark_id"]) for r in rows for i in (r["images"] or "").split())
    else:
        rows = read_csv_columns(path, ("id", "landmark_id"))
        pairs = ((r["id"], r["landmark_id"]) for r in rows)
    return _listing(images, pairs, source)
