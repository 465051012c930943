"""1st place (0.728): ViT-H-14, Dropout 0.2 -> Linear(1024 -> 64), CosFace m 0.55 s 30.
Stage 1 (training notebook) trains the neck and head on a frozen backbone (SGD, LR 0.02);
stage 2 (fine-tune notebook) tunes the backbone against the FROZEN head at 280 px (LR 2.5e-4).
Products-10K is read from the Kaggle dataset `PRODUCTS10K` (your upload; see `presets._kaggle`)."""

from __future__ import annotations

from guie_nb.presets._kaggle import H14_LAION2B, PRODUCTS10K_DATASET, chain_params, source

PRODUCTS10K = PRODUCTS10K_DATASET  # "{owner}/products-10k": the Kaggle dataset holding Products-10K

MODEL = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.2,
         "head": {"kind": "cosface", "scale": 30.0, "margin": 0.55}}


def notebook_params(root: str) -> dict[str, dict]:
    return chain_params(
        root,
        sources=[source("products10k", PRODUCTS10K, images_per_class=100), source("gldv2", max_classes=20000)],
        max_side=384,
        model=MODEL,
        train={"epochs": 6, "batch_size": 512, "learning_rate": 0.02, "optimizer": "sgd", "momentum": 0.9,
               "weight_decay": 0.0, "warmup_epochs": 0.5, "freeze_backbone": True},
        finetune={"epochs": 3, "batch_size": 256, "learning_rate": 2.5e-4, "optimizer": "sgd",
                  "weight_decay": 0.0, "warmup_epochs": 0.2, "freeze_head": True,
                  # the backbone's activations at 280 px: 40 GiB per chip as is, 10.4 with per-block
                  # rematerialisation (guie_nb.model.memory_plan.plan_for)
                  "remat": True},
        finetune_extra={"image_size": 280},
        # ~760k images at 384 px, ~28 GB of shards: over one kernel's 20 GB (make rehearse)
        data_prep_kernels=2,
    )
