"""4th place (0.688 private): soups of fine-tuned OpenCLIP ViT-L-14-336 and ViT-H-14 models, the two
concatenated, then PCA to 64-d; sub-center ArcFace with adaptive (per-class) margins, layer-wise
learning rates from 1.25e-6 (lowest blocks) to 3e-4 (head). Sources: ../shared/GUIE_FACTS.md
sections 2 and 6 (`IvanAer/G-Universal-CLIP`; write-up arXiv 2210.11141).

What this preset runs: ONE backbone, ViT-H-14 LAION-2B. The chain trains (02) then fine-tunes at a
lower learning rate (03); the export (04) makes a greedy soup of those two runs on the held-out
mP@5 (Wortsman et al. 2022, `guie_nb.model.soup`). The ViT-L-14-336 half and the concat -> PCA
are left out: one chain trains one backbone. The mechanisms exist: `ModelConfig.extra_backbones`
concatenates backbones before the neck (Keras, SavedModel, TorchScript) and the export's
`soup.reduction = "pca"` refits the projection as PCA of the souped features; a preset with a
second training stage for ViT-L-14-336 (multi-stage presets) can combine them.

Chosen here, not given by the source: sub-centres k = 3, margins 0.2 (largest classes) to 0.5
(smallest), AdamW, the data (Products-10K + GLDv2 as the other presets), epochs and batch size.
Layer-wise LR: head 3e-4, backbone top x0.1, decay 0.9 per block: 3e-4 x 0.1 x 0.9^32 = 1.0e-6 at
the lowest block, the source's 1.25e-6.
"""

from __future__ import annotations

from guie_nb.presets._kaggle import H14_LAION2B, PRODUCTS10K_DATASET, chain_params, source

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.2,
         "head": {"kind": "arcface", "scale": 30.0, "margin": 0.2, "subcenters": 3,
                  "margin_schedule": "dynamic", "margin_min": 0.2, "margin_max": 0.5}}
LAYERWISE = {"learning_rate": 3e-4, "backbone_lr_multiplier": 0.1, "layer_decay": 0.9}


def notebook_params(root: str) -> dict[str, dict]:
    params = chain_params(
        root,
        sources=[source("products10k", PRODUCTS10K_DATASET), source("gldv2")],
        max_side=384,
        model=MODEL,
        train={"epochs": 8, "batch_size": 256, **LAYERWISE, "weight_decay": 0.05, "warmup_epochs": 1.0,
               "remat": True},  # AdamW on the whole ViT-H: remat keeps a chip under 16 GiB (seed_recipe)
        finetune={"epochs": 3, "batch_size": 256, **LAYERWISE, "learning_rate": 1e-4, "warmup_epochs": 0.0,
                  "remat": True},
    )
    params["04_export"] = {"data_dir": f"{root}/data", "model_dir": None, "train_dir": f"{root}/train",
                           "out_dir": root,
                           "soup": {"model_dirs": [f"{root}/train", f"{root}/finetune"], "mode": "greedy"}}
    return params
