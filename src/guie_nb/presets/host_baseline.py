"""Seed 003, the host's baseline: ViT-B/16 + 64-d bottleneck, softmax with label smoothing 0.1,
AdamW wd 0.05, LR 0.004 cosine (the original: batch 4096, 300 epochs on ImageNet-1k TFRecords;
here shortened to fit a Kaggle TPU session, resumable across sessions). ImageNet is read from
Kaggle's ILSVRC competition data; with ImageNet in the Model Garden TFRecord format attached
instead, use a source of kind `imagenet_tfrecord`."""

from __future__ import annotations

from guie_nb.presets._kaggle import chain_params, source

MODEL = {"backbone": "ViT-B-16", "embedding_dim": 64, "dropout": 0.0,
         "head": {"kind": "softmax", "scale": 30.0, "margin": 0.0}}


def notebook_params(root: str) -> dict[str, dict]:
    return chain_params(
        root,
        sources=[source("imagenet", images_per_class=300)],
        max_side=320,
        model=MODEL,
        train={"epochs": 30, "batch_size": 1024, "learning_rate": 0.004, "weight_decay": 0.05,
               "label_smoothing": 0.1, "warmup_epochs": 3.0},
        finetune={"epochs": 2, "batch_size": 1024, "learning_rate": 4e-4, "weight_decay": 0.05,
                  "label_smoothing": 0.1, "warmup_epochs": 0.0},
    )
