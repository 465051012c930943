"""GPR1200 (Schall et al. 2021, "A Benchmark for General-Purpose Content-Based Image Retrieval";
visual-computing.com/files/GPR1200/GPR1200.zip; not on Kaggle as far as we know): 12,000 images,
1,200 classes of 10, every file named `<class>_<name>.jpg` in one folder (`images/` under the root,
or the root itself). Label: the number before the first `_`.

The 1st place validated on it as a multi-domain set. Its classes come in six blocks of 200, one per
domain (the order of the benchmark's own per-domain evaluation): 0-199 landmarks (GLDv2), 200-399
iNaturalist, 400-599 sketches (ImageNet-Sketch), 600-799 INSTRE, 800-999 Stanford Online
Products, 1000-1199 IMDB faces. Each image carries its domain (`<source>_<domain>`), so validation
reports mP@5 per domain.
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.source_images import Listing, SourceError, SourceImage, require_dir

DOMAINS = ("landmarks", "inat", "sketches", "instre", "sop", "faces")
CLASSES_PER_DOMAIN = 200


def gpr1200_domain(label: int) -> str:
    return DOMAINS[label // CLASSES_PER_DOMAIN] if 0 <= label < CLASSES_PER_DOMAIN * len(DOMAINS) else "other"


def read_gpr1200(root: str | Path, source: str = "gpr1200", image_dir: str = "") -> Listing:
    root = require_dir(Path(root), "gpr1200 root")
    folder = root / image_dir if image_dir else (root / "images" if (root / "images").is_dir() else root)
    require_dir(folder, "gpr1200 images")
    listing = Listing([])
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        label = f.name.split("_", 1)[0]
        if "_" not in f.name or not label.isdigit():
            listing.skipped.append({"path": str(f), "reason": "file name without a <class>_ prefix"})
            continue
        domain = f"{source}_{gpr1200_domain(int(label))}"
        listing.images.append(SourceImage(f, str(int(label)), f.name, source, domain=domain))
    if not listing.images:
        raise SourceError(f"gpr1200: no <class>_<name> files in {folder}")
    return listing
