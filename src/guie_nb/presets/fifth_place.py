"""5th place (0.688 private): a frozen OpenCLIP ViT-H-14 (LAION-2B) embeds every image once; a
BatchNorm -> Linear(1280 -> 64) neck with an ArcFace head (s 30, m 0.5) trains on those cached
embeddings for many epochs, with the image's [height, width, aspect] fed to the head.

Source: the 5th-place write-up and code (`riron1206/...5th-Place-Solution`, as summarised in
shared/GUIE_FACTS.md §2 and §6): frozen backbone, precomputed embeddings, BN + Linear trained
1000 epochs (with SAM), [h, w, aspect] features, TTA variants picked per image by a category
classifier. Here: `cached_embeddings` (guie_nb.training.cached) does the embed-once and the
training; `neck_batchnorm` is the BN; AdamW stands in for SAM, which this project does not have,
and the per-category TTA is left out. The write-up's training data is not in our sources, so the
seed recipe's (ImageNet + Products-10K + GLDv2 subsets, 50 images per class) is used.

`size_features` ([ln(h/500), ln(w/500), ln(w/h)] of the raw image, joined to the backbone feature
before the BN) comes from the source image's sides, which the feature cache stores beside each
feature (`original_sizes`), so the neck trains on them from the cache too.

Stages: the training notebook embeds and trains (one ViT-H forward pass per image, then minutes
on the features); the fine-tune notebook continues on the same cache at a tenth of the learning
rate (the cache is reused from the training output, no second forward pass).
"""

from __future__ import annotations

from guie_nb.presets._kaggle import EXPORT_ON_T4, H14_LAION2B, PRODUCTS10K_DATASET, chain_params, source

PRODUCTS10K = PRODUCTS10K_DATASET  # "{owner}/products-10k": the Kaggle dataset holding Products-10K

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.0,
         "neck_batchnorm": True, "size_features": True,
         "head": {"kind": "arcface", "scale": 30.0, "margin": 0.5}}
CACHED = {"freeze_backbone": True, "cached_embeddings": True, "optimizer": "adamw", "batch_size": 512,
          "weight_decay": 1e-4}

KERNEL_MACHINES = EXPORT_ON_T4  # a ViT-H-14 export: see presets._kaggle


def notebook_params(root: str) -> dict[str, dict]:
    return chain_params(
        root,
        sources=[source("imagenet"), source("products10k", PRODUCTS10K), source("gldv2")],
        max_side=384,
        model=MODEL,
        train={**CACHED, "epochs": 1000, "learning_rate": 1e-3, "warmup_epochs": 5.0},
        finetune={**CACHED, "epochs": 50, "learning_rate": 1e-4, "warmup_epochs": 0.0},
    )
