"""The MET dataset (Ypsilantis et al., NeurIPS 2021 Datasets; cmp.felk.cvut.cz/met): one class
per Met exhibit. Ground truth `MET_database.json` (or `mini_MET_database.json`) is a JSON list of
`{"id": <exhibit id>, "path": "MET/<exhibit id>/<n>.jpg"}`, in `ground_truth/` or at the root; the
paths are relative to the folder holding `MET/`.

On Kaggle the copy we know of is `kaggle://datasets/dschettler8845/the-met-dataset` (unsure it
is current), mounted as `/kaggle/input/the-met-dataset/` with `MET/MET/<id>/<n>.jpg` and
`ground_truth/MET_database.json`; the reader finds the image folder in either layout.
"""

from __future__ import annotations

import json
from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, find_file, require_dir


def read_met(root: str | Path, source: str = "met", json_name: str = "MET_database.json") -> Listing:
    root = require_dir(Path(root), "met root")
    gt = find_file(root, (f"ground_truth/{json_name}", json_name), "met ground truth")
    try:
        entries = json.loads(gt.read_text())
    except ValueError as e:
        raise SourceError(f"{gt}: not valid JSON ({e})") from e
    if not isinstance(entries, list):
        raise SourceError(f"{gt}: expected a JSON list of {{'id', 'path'}} entries")
    base = root / "MET" if (root / "MET" / "MET").is_dir() else root  # Kaggle's copy nests MET/MET
    listing = Listing([])
    for e in entries:
        if not isinstance(e, dict) or "id" not in e or not e.get("path"):
            listing.skipped.append({"path": str(gt), "reason": "ground-truth entry without id or path"})
            continue
        listing.images.append(SourceImage(base / e["path"], str(e["id"]), e["path"], source))
    return listing
