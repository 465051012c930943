"""Seed 000 (~0.65 private): ViT-H-14 LAION-2B, ArcFace on a 256 -> 64 neck, ImageNet-like +
Products-10K + GLDv2 subsets at 50 images per class, then a lower-learning-rate fine-tune."""

from __future__ import annotations

from guie_nb.presets._kaggle import KAGGLE_INPUT, export_params

MODEL = {"backbone": "ViT-H-14", "embedding_dim": 64, "hidden_dim": 256, "dropout": 0.2,
         "head": {"kind": "arcface", "scale": 30.0, "margin": 0.3}}


def notebook_params(root: str) -> dict[str, dict]:
    data = f"{root}/data"
    val = {"val_classes": 200, "queries_per_class": 1}
    return {
        "01_data_prep": {
            "sources": [
                # the ILSVRC layout of Kaggle's ImageNet competition data (LOC_synset_mapping.txt at its root)
                {"kind": "imagenet", "root": f"{KAGGLE_INPUT}/imagenet-object-localization-challenge",
                 "images_per_class": 50, **val},
                {"kind": "products10k", "root": f"{KAGGLE_INPUT}/products-10k", "images_per_class": 50, **val},
                {"kind": "gldv2", "root": f"{KAGGLE_INPUT}/landmark-recognition-2021", "images_per_class": 50,
                 "max_classes": 7000, **val},
            ],
            "out_dir": data, "demo_data_dir": None, "max_side": 384, "images_per_shard": 2000, "seed": 0,
        },
        "02_train_tpu": {
            "data_dir": data, "out_dir": f"{root}/train", "keras_backend": "jax", "model": MODEL,
            "train": {"epochs": 10, "batch_size": 256, "learning_rate": 1e-3, "backbone_lr_multiplier": 0.05,
                      "weight_decay": 0.05, "warmup_epochs": 1.0, "precision": "mixed_bfloat16",
                      "steps_per_execution": 8, "checkpoint_every": 400},
        },
        "03_finetune": {
            "data_dir": data, "init_dir": f"{root}/train", "out_dir": f"{root}/finetune", "keras_backend": "jax",
            "train": {"epochs": 3, "batch_size": 256, "learning_rate": 1e-4, "backbone_lr_multiplier": 0.05,
                      "warmup_epochs": 0.0, "precision": "mixed_bfloat16", "steps_per_execution": 8,
                      "checkpoint_every": 400},
        },
        "04_export": export_params(root, f"{root}/finetune", f"{root}/train"),
    }
