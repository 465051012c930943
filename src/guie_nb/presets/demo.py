"""The demo: the embedded synthetic dataset and a tiny ViT, end to end on a laptop CPU in minutes."""

from __future__ import annotations

MODEL = {"backbone": "demo-tiny", "backbone_weights": "", "embedding_dim": 64, "dropout": 0.0,
         "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1}}


def notebook_params(root: str) -> dict[str, dict]:
    data = f"{root}/data"
    val = {"val_classes": 30, "queries_per_class": 2}
    return {
        "01_data_prep": {
            "sources": [
                {"kind": "products10k", "root": f"{root}/raw/products10k", **val},
                {"kind": "gldv2", "root": f"{root}/raw/gldv2", **val},
            ],
            "out_dir": data,
            "demo_data_dir": f"{root}/raw",
            "max_side": 160,
            "images_per_shard": 500,
            "seed": 0,
        },
        "02_train_tpu": {
            "data_dir": data,
            "out_dir": f"{root}/train",
            "keras_backend": "jax",
            "model": MODEL,
            "train": {"epochs": 12, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.02,
                      "checkpoint_every": 100},
        },
        "03_finetune": {
            "data_dir": data,
            "init_dir": f"{root}/train",
            "out_dir": f"{root}/finetune",
            "keras_backend": "jax",
            "train": {"epochs": 3, "batch_size": 64, "learning_rate": 3e-4, "warmup_epochs": 0.0,
                      "weight_decay": 0.02},
        },
        "04_export": {
            "data_dir": data,
            "model_dir": f"{root}/finetune",
            "train_dir": f"{root}/train",
            "out_dir": root,
        },
        "05_submit": {
            "export_dir": root,
            "out_dir": f"{root}/submit",
        },
    }
