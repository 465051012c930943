"""3rd place, 0.692 private: ViT-H-14 (HF TFCLIPVisionModel, trained with TensorFlow on TPU), 20
parallel Dense(64) branches with dropout, averaged; sub-center ArcFace k = 3; Products-10K (9,691
classes) + GLR2021-mini (7,000 classes x 50 images); stage 1 trains the head on the frozen
backbone, stage 2 the whole model at LR 1e-6 (GUIE_FACTS.md §2; the team's repository,
YasumasaNamba/google-universal-image-embedding, holds a README and the model only, §6).

Assumed (not in GUIE_FACTS or the seeds): ArcFace s 30, m 0.3 (the seed recipe's), dropout 0.2 in
each branch, AdamW, stage 1 at LR 1e-3 for 5 epochs, stage 2 for 2 epochs, all of Products-10K's
images (at most 1,000 per class: the published train set averages 15). The weights are OpenCLIP's
laion2b_s32b_b79k, the ViT-H-14 that HF's CLIP port also holds.
"""

from __future__ import annotations

from guie_nb.presets._kaggle import (EXPORT_ON_T4, H14_LAION2B, PRODUCTS10K_DATASET, Stage, source,
                                     staged_chain_params)

PRODUCTS10K = PRODUCTS10K_DATASET

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.2,
         "neck_branches": 20, "head": {"kind": "arcface", "scale": 30.0, "margin": 0.3, "subcenters": 3}}

STAGES = [
    Stage("heads-224", {"epochs": 5, "batch_size": 512, "learning_rate": 1e-3, "weight_decay": 0.05,
                        "warmup_epochs": 0.5, "freeze_backbone": True}),
    # the whole model with AdamW: 28 GiB per chip as is, 12.1 with remat (seed_recipe's measurement)
    Stage("all-224", {"epochs": 2, "batch_size": 256, "learning_rate": 1e-6, "weight_decay": 0.05,
                      "warmup_epochs": 0.0, "remat": True}),
]

KERNEL_MACHINES = EXPORT_ON_T4  # a ViT-H-14 export: see presets._kaggle


def notebook_params(root: str) -> dict[str, dict]:
    return staged_chain_params(
        root,
        sources=[source("products10k", PRODUCTS10K, images_per_class=1000),
                 source("gldv2", max_classes=7000, images_per_class=50)],
        max_side=384,
        model=MODEL,
        stages=STAGES,
    )
