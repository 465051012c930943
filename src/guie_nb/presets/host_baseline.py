"""Seed 003, the host's baseline: ViT-B/16 + 64-d bottleneck, softmax with label smoothing 0.1,
AdamW wd 0.05, LR 0.004 cosine (the original: batch 4096, 300 epochs on ImageNet-1k TFRecords;
here shortened to fit a Kaggle TPU session, resumable across sessions)."""

from __future__ import annotations

from guie_nb.presets._kaggle import KAGGLE_INPUT, export_params

MODEL = {"backbone": "ViT-B-16", "embedding_dim": 64, "dropout": 0.0,
         "head": {"kind": "softmax", "scale": 30.0, "margin": 0.0}}


def notebook_params(root: str) -> dict[str, dict]:
    data = f"{root}/data"
    val = {"val_classes": 200, "queries_per_class": 1}
    return {
        "01_data_prep": {
            "sources": [
                {"kind": "products10k", "root": f"{KAGGLE_INPUT}/products-10k", "images_per_class": 50, **val},
                {"kind": "gldv2", "root": f"{KAGGLE_INPUT}/landmark-recognition-2021", "images_per_class": 50,
                 "max_classes": 7000, **val},
            ],
            "out_dir": data, "demo_data_dir": None, "max_side": 320, "images_per_shard": 2000, "seed": 0,
        },
        "02_train_tpu": {
            "data_dir": data, "out_dir": f"{root}/train", "keras_backend": "jax", "model": MODEL,
            "train": {"epochs": 30, "batch_size": 1024, "learning_rate": 0.004, "weight_decay": 0.05,
                      "label_smoothing": 0.1, "warmup_epochs": 3.0, "precision": "mixed_bfloat16",
                      "steps_per_execution": 8, "checkpoint_every": 400},
        },
        "03_finetune": {
            "data_dir": data, "init_dir": f"{root}/train", "out_dir": f"{root}/finetune", "keras_backend": "jax",
            "train": {"epochs": 2, "batch_size": 1024, "learning_rate": 4e-4, "weight_decay": 0.05,
                      "label_smoothing": 0.1, "warmup_epochs": 0.0, "precision": "mixed_bfloat16",
                      "steps_per_execution": 8, "checkpoint_every": 400},
        },
        "04_export": export_params(root, f"{root}/finetune", f"{root}/train"),
    }
