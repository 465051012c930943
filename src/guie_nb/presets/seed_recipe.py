"""Seed 000 (~0.65 private): ViT-H-14 LAION-2B, ArcFace on a 256 -> 64 neck, ImageNet +
Products-10K + GLDv2 subsets at 50 images per class, then a lower-learning-rate fine-tune."""

from __future__ import annotations

from guie_nb.presets._kaggle import EXPORT_ON_T4, H14_LAION2B, PRODUCTS10K_DATASET, chain_params, source

PRODUCTS10K = PRODUCTS10K_DATASET  # "{owner}/products-10k": the Kaggle dataset holding Products-10K

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "hidden_dim": 256, "dropout": 0.2,
         "head": {"kind": "arcface", "scale": 30.0, "margin": 0.3}}

KERNEL_MACHINES = EXPORT_ON_T4  # a ViT-H-14 export: see presets._kaggle


def notebook_params(root: str) -> dict[str, dict]:
    return chain_params(
        root,
        sources=[source("imagenet"), source("products10k", PRODUCTS10K), source("gldv2")],
        max_side=384,
        model=MODEL,
        train={"epochs": 10, "batch_size": 256, "learning_rate": 1e-3, "backbone_lr_multiplier": 0.05,
               "weight_decay": 0.05, "warmup_epochs": 1.0,
               "remat": True},  # AdamW on the whole ViT-H: 28 GiB per chip as is, 12.1 with remat
        finetune={"epochs": 3, "batch_size": 256, "learning_rate": 1e-4, "backbone_lr_multiplier": 0.05,
                  "warmup_epochs": 0.0, "remat": True},
    )
