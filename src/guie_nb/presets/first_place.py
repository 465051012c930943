"""1st place (0.728): ViT-H-14, Dropout 0.2 -> Linear(1024 -> 64), CosFace m 0.55 s 30.
Stage 1 (training notebook) trains the neck and head on a frozen backbone (SGD, LR 0.02);
stage 2 (fine-tune notebook) tunes the backbone against the FROZEN head at 280 px (LR 2.5e-4)."""

from __future__ import annotations

from guie_nb.presets._kaggle import KAGGLE_INPUT, export_params

MODEL = {"backbone": "ViT-H-14", "embedding_dim": 64, "dropout": 0.2,
         "head": {"kind": "cosface", "scale": 30.0, "margin": 0.55}}


def notebook_params(root: str) -> dict[str, dict]:
    data = f"{root}/data"
    val = {"val_classes": 200, "queries_per_class": 1}
    return {
        "01_data_prep": {
            "sources": [
                {"kind": "products10k", "root": f"{KAGGLE_INPUT}/products-10k", "images_per_class": 100, **val},
                {"kind": "gldv2", "root": f"{KAGGLE_INPUT}/landmark-recognition-2021", "images_per_class": 50,
                 "max_classes": 20000, **val},
            ],
            "out_dir": data, "demo_data_dir": None, "max_side": 384, "images_per_shard": 2000, "seed": 0,
        },
        "02_train_tpu": {
            "data_dir": data, "out_dir": f"{root}/train", "keras_backend": "jax", "model": MODEL,
            "train": {"epochs": 6, "batch_size": 512, "learning_rate": 0.02, "optimizer": "sgd", "momentum": 0.9,
                      "weight_decay": 0.0, "warmup_epochs": 0.5, "freeze_backbone": True,
                      "precision": "mixed_bfloat16", "steps_per_execution": 8, "checkpoint_every": 400},
        },
        "03_finetune": {
            "data_dir": data, "init_dir": f"{root}/train", "out_dir": f"{root}/finetune", "keras_backend": "jax",
            "image_size": 280,
            "train": {"epochs": 3, "batch_size": 256, "learning_rate": 2.5e-4, "optimizer": "sgd",
                      "weight_decay": 0.0, "warmup_epochs": 0.2, "freeze_head": True,
                      "precision": "mixed_bfloat16", "steps_per_execution": 8, "checkpoint_every": 400},
        },
        "04_export": export_params(root, f"{root}/finetune", f"{root}/train"),
    }
