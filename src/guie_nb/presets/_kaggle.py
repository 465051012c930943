"""Shared parts of the full-size presets: where Kaggle mounts the raw data, and the
per-notebook parameter layout every preset follows (root/data, root/train, root/finetune, root)."""

from __future__ import annotations

KAGGLE_INPUT = "/kaggle/input"
RAW_ROOTS = {
    "imagenet": f"{KAGGLE_INPUT}/imagenet-object-localization-challenge",  # ILSVRC layout
    "products10k": f"{KAGGLE_INPUT}/products-10k",
    "gldv2": f"{KAGGLE_INPUT}/landmark-recognition-2021",
}
# OpenCLIP ViT-H-14 LAION-2B as KerasHub's Kaggle Model (attached by the TPU kernels' model_sources)
H14_LAION2B = "kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3"
VAL = {"val_classes": 200, "queries_per_class": 1}
LONG_RUN = {"precision": "mixed_bfloat16", "steps_per_execution": 8, "checkpoint_every": 400}


def source(kind: str, **options) -> dict:
    """A `sources` entry for raw data attached to the data-prep kernel, with the validation split;
    what it leaves out takes the recipe's defaults (`guie_nb.data.recipe.RECIPE`)."""
    return {"kind": kind, "root": RAW_ROOTS[kind], **VAL, **options}


def chain_params(root: str, *, sources: list[dict], max_side: int, model: dict, train: dict,
                 finetune: dict, finetune_extra: dict | None = None) -> dict[str, dict]:
    """The four notebooks' parameters for a full-size run; `train`/`finetune` get LONG_RUN defaults."""
    data = f"{root}/data"
    return {
        "01_data_prep": {"sources": sources, "out_dir": data, "demo_data_dir": None, "max_side": max_side,
                         "images_per_shard": 2000, "seed": 0},
        "02_train_tpu": {"data_dir": data, "out_dir": f"{root}/train", "keras_backend": "jax", "model": model,
                         "train": {**LONG_RUN, **train}},
        "03_finetune": {"data_dir": data, "init_dir": f"{root}/train", "out_dir": f"{root}/finetune",
                        "keras_backend": "jax", **(finetune_extra or {}), "train": {**LONG_RUN, **finetune}},
        "04_export": {"data_dir": data, "model_dir": f"{root}/finetune", "train_dir": f"{root}/train",
                      "out_dir": root},
    }
