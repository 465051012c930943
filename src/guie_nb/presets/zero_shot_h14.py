"""Zero-shot, full size: OpenCLIP ViT-H-14 LAION-2B (the attached KerasHub Kaggle Model) with its
1024-d features reduced by PCA to 64-d, fitted on 4,000 training images; no training, so the
chain is data-prep (01) -> export (04) -> submit (05), all CPU kernels.

Source: the 4th-place GUIE team's zero-shot notebook (CLIP + PCA to 64-d), 0.603 private
(`IvanAer/G-Universal-CLIP`; ../shared/GUIE_FACTS.md section 6). The data-prep is a small sample
(2 images from each of 2,000 Products-10K and 2,000 GLDv2 classes) plus the held-out validation
classes that score the export. A ViT-H-14 forward takes ~3 s per 224 px image on 2 CPU cores
(GUIE_FACTS section 5): the fit and the validation scoring take hours on a CPU kernel (12 h limit;
the rehearsal counts 6.0 h: 3 passes over 800 held-out images, the 4,000-image fit, the probes).
"""

from __future__ import annotations

from guie_nb.presets._kaggle import H14_LAION2B, PRODUCTS10K_DATASET, source
from guie_nb.presets.zero_shot import export_params

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.0}


def notebook_params(root: str) -> dict[str, dict]:
    data = f"{root}/data"
    sample = {"images_per_class": 2, "max_classes": 2000}
    return {
        "01_data_prep": {"sources": [source("products10k", PRODUCTS10K_DATASET, **sample), source("gldv2", **sample)],
                         "out_dir": data, "demo_data_dir": None, "max_side": 384, "images_per_shard": 2000,
                         "seed": 0},
        "04_export": export_params(root, data, MODEL, "pca", 4000),
        "05_submit": {"export_dir": root, "out_dir": f"{root}/submit"},
    }
