"""A small demo dataset for the training tests: made once per session, in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.data.prepare import prepare

SMALL_SPEC = DemoSpec(products_classes=24, landmark_classes=16, views_per_class=6, min_side=64, max_side=96)


def make_small_data(root: Path) -> Path:
    """40 classes x 6 views: 28 training classes (168 images), 12 held out (2 queries each)."""
    roots = write_demo_sources(root / "raw", SMALL_SPEC)
    out = root / "data"
    if not (out / "manifest.json").is_file():
        prepare([{"kind": "products10k", "root": str(roots["products10k"]), "val_classes": 6, "queries_per_class": 2},
                 {"kind": "gldv2", "root": str(roots["gldv2"]), "val_classes": 6, "queries_per_class": 2}],
                out, max_side=96, images_per_shard=64, seed=0, progress=False)
    return out
