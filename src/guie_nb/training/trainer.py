"""A short, linear trainer: data -> model -> compile -> fit with per-epoch validation -> save.

Backend-agnostic Keras 3 (JAX on TPU and in CI, TensorFlow works too). Outputs in `out_dir`:
`model_config.json`, `train_config.json`, `training_model.weights.h5` (embedding + head, for
fine-tuning), `embedding.weights.h5` (for export), `history.csv` and `metrics.json`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from guie_nb.data.pipeline import train_dataset
from guie_nb.data.prepare import load_manifest
from guie_nb.evaluation import ValidationSet, evaluate_keras
from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model
from guie_nb.training.config import TrainConfig

TRAINING_WEIGHTS = "training_model.weights.h5"
EMBEDDING_WEIGHTS = "embedding.weights.h5"


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * (0.0 if warmup else 1.0),
        decay_steps=max(1, total - warmup),
        alpha=cfg.end_learning_rate_ratio,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=True)
    opt = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    # no weight decay on norms, biases, embeddings and the margin centres
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "class_embedding",
                                             "positional_embedding", "centers"])
    return opt


class ValidationCallback(keras.callbacks.Callback):
    """mP@5 on the held-out split after every epoch, added to the epoch's logs."""

    def __init__(self, embedding_model, val: ValidationSet, size: int, resize_mode: str):
        super().__init__()
        self.embedding_model, self.val, self.size, self.resize_mode = embedding_model, val, size, resize_mode

    def on_epoch_end(self, epoch, logs=None):
        scores = evaluate_keras(self.embedding_model, self.val, self.size, self.resize_mode)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in scores.items()})
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))


def train(data_dir: str | Path, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
          init_dir: str | Path | None = None) -> dict:
    """Train (or, with `init_dir`, continue training) and write the outputs; returns metrics."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = load_manifest(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(train_cfg.seed)

    embedding_model = build_embedding_model(model_cfg)
    training_model = build_training_model(embedding_model, manifest["num_classes"], model_cfg.head)
    if init_dir is not None:
        weights = Path(init_dir) / TRAINING_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"no {TRAINING_WEIGHTS} in {init_dir}: run the training notebook first")
        training_model.load_weights(weights)

    size, mode = model_cfg.input_size, model_cfg.resize_mode
    val = ValidationSet.from_manifest(data_dir, manifest)
    initial = evaluate_keras(embedding_model, val, size, mode)
    print("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in initial.items()))

    steps = train_cfg.steps_per_epoch or max(1, manifest["train_images"] // train_cfg.batch_size)
    training_model.compile(
        optimizer=build_optimizer(train_cfg, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=train_cfg.steps_per_execution,
    )
    ds = train_dataset([data_dir / f for f in manifest["train_files"]], size, train_cfg.batch_size,
                       seed=train_cfg.seed)
    started = time.time()
    history = training_model.fit(
        ds, epochs=train_cfg.epochs, steps_per_epoch=steps, verbose=2,
        callbacks=[ValidationCallback(embedding_model, val, size, mode)],
    )
    seconds = time.time() - started
    losses = history.history["loss"]
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"training loss became non-finite: {losses}")

    model_cfg.save(out_dir / "model_config.json")
    (out_dir / "train_config.json").write_text(json.dumps(train_cfg.to_dict(), indent=2))
    training_model.save_weights(out_dir / TRAINING_WEIGHTS)
    embedding_model.save_weights(out_dir / EMBEDDING_WEIGHTS)
    write_history(out_dir / "history.csv", history.history)
    final = {k.removeprefix("val_"): history.history[k][-1] for k in history.history if k.startswith("val_")}
    metrics = {
        "initial": initial, "final": final, "epochs": train_cfg.epochs, "steps_per_epoch": steps,
        "train_seconds": seconds, "images_per_second": steps * train_cfg.epochs * train_cfg.batch_size / seconds,
        "backend": keras.backend.backend(), "num_classes": manifest["num_classes"],
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def write_history(path: Path, history: dict[str, list]) -> None:
    keys = list(history)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", *keys])
        for i in range(len(history[keys[0]]) if keys else 0):
            w.writerow([i + 1, *[float(np.asarray(history[k][i])) for k in keys]])
