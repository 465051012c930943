"""DeepFashion In-shop Clothes Retrieval (mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html;
Kaggle copies exist under several owners, none we could confirm as complete): `list_eval_partition.txt`
at the root or in `Eval/`, and the images under the root at the listed names (`img/...` from `img.zip`).

The partition file: line 1 the number of images, line 2 the header `image_name item_id
evaluation_status`, then one whitespace-separated row per image, e.g.
`img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train`. Label: `item_id` (7,982 items);
`splits` picks the rows by `evaluation_status` (`train`, `query`, `gallery`; default all three).
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, find_file, require_dir

HEADER = ["image_name", "item_id", "evaluation_status"]


def read_deepfashion_inshop(root: str | Path, source: str = "deepfashion_inshop",
                            splits: tuple[str, ...] | list[str] = ("train", "query", "gallery")) -> Listing:
    root = require_dir(Path(root), "deepfashion_inshop root")
    path = find_file(root, ("list_eval_partition.txt", "Eval/list_eval_partition.txt"), "deepfashion_inshop")
    lines = path.read_text().splitlines()
    if len(lines) < 2 or lines[1].split() != HEADER:
        raise SourceError(f"{path}: expected line 2 to be {' '.join(HEADER)!r}, got {lines[1:2]}")
    listing = Listing([])
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            listing.skipped.append({"path": line, "reason": "malformed partition row"})
        elif parts[2] in splits:
            listing.images.append(SourceImage(root / parts[0], parts[1], parts[0], source))
    return listing
