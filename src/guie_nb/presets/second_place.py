"""2nd place, 0.709 private: ViT-H-14 with sub-center ArcFace (k = 2, s 30), the margin growing
by 0.1 per epoch from 0.3 up to 0.8, AdamW with the backbone's learning rate x1e-3, at most 100
images per class, class resampling, flip TTA at scoring (GUIE_FACTS.md §2 and §6; the team's code:
rainbow-xiao/ECCV2022-ILR-workshop; 14 datasets, 274k classes).

Class resampling: the team capped every class at 100 images, then repeated each class with fewer
than 20 images up to 20 rows of its training table (`Data_Merge.ipynb`, "Sample" and "Resample":
floor(20 / n) copies of the class, plus 20 mod n of its images once more, drawn once, offline).
Here data-prep caps at 100 (`images_per_class`) and training resamples with
`min_draws_per_class=20` (guie_nb.data.resampling): each image of a class of n < 20 is read
20 / n times per epoch, stochastically rounded, fresh each epoch, so the class is drawn 20 times
per epoch in expectation; an epoch is sum_c max(n_c, 20) images (in the rehearsal's data-prep
plan 890,575 against 826,082 images: +7.8% steps, 3.31 h against 3.07 h of TPU v5e-8 time).

Assumed (not in GUIE_FACTS or the seeds): the head's learning rate 1e-3 (so the backbone trains at
1e-6), 6 epochs (the margin reaches 0.8 in the 6th), Dropout 0.2, and the CLIP projection kept (the
team used the 1280-d visual features without it; `ModelConfig` has no switch for that). Left out:
12 of the 14 datasets: the data are Products-10K and GLDv2 (20,000 classes), 100 images per class.
Flip TTA is the model's `flip_tta` (the mean of the image's and its mirror's embedding, before L2).
"""

from __future__ import annotations

from guie_nb.presets._kaggle import (EXPORT_ON_T4, H14_LAION2B, PRODUCTS10K_DATASET, Stage, source,
                                     staged_chain_params)

PRODUCTS10K = PRODUCTS10K_DATASET

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.2,
         "flip_tta": True,  # the exported model embeds the image and its mirror, averaged before L2
         "head": {"kind": "arcface", "scale": 30.0, "margin": 0.3, "subcenters": 2,
                  "margin_schedule": "linear", "margin_growth": 0.1, "margin_max": 0.8}}

STAGES = [
    # AdamW on the whole ViT-H: 28 GiB per chip as is, 12.1 with remat (seed_recipe's measurement)
    Stage("subcenter-224", {"epochs": 6, "batch_size": 256, "learning_rate": 1e-3, "backbone_lr_multiplier": 1e-3,
                            "weight_decay": 0.05, "warmup_epochs": 0.5, "remat": True,
                            "min_draws_per_class": 20}),  # the team's resampling floor
]

# The export runs on a T4 GPU kernel: scoring its 9,784 held-out images with the flip-TTA ViT-H-14
# (0.67 TFLOP/image) takes 18.3 h at the assumed CPU rate (12 h limit), 0.8 h on the T4
# (`make rehearse PROFILE=second_place`).
KERNEL_MACHINES = EXPORT_ON_T4


def notebook_params(root: str) -> dict[str, dict]:
    return staged_chain_params(
        root,
        sources=[source("products10k", PRODUCTS10K, images_per_class=100),
                 source("gldv2", max_classes=20000, images_per_class=100)],
        max_side=384,
        model=MODEL,
        stages=STAGES,
        data_prep_kernels=2,
    )
