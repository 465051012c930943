"""Start a run from an earlier run's output: the weights of its training model (embedding +
head), at the same or a higher input resolution (interpolated position embeddings)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model

TRAINING_WEIGHTS = "training_model.weights.h5"
POSEMB = "positional_embedding"


def resize_positional_embedding(posemb: np.ndarray, new_tokens: int) -> np.ndarray:
    """`[1 + g*g, D] -> [1 + G*G, D]`: the class token's row kept, the patch grid resized bicubically."""
    import jax

    old_grid, new_grid = int(round((posemb.shape[0] - 1) ** 0.5)), int(round((new_tokens - 1) ** 0.5))
    if old_grid**2 + 1 != posemb.shape[0] or new_grid**2 + 1 != new_tokens:
        raise ValueError(f"position embeddings of {posemb.shape[0]} -> {new_tokens} tokens are not square grids")
    grid = posemb[1:].reshape(old_grid, old_grid, -1)
    grid = jax.image.resize(grid, (new_grid, new_grid, grid.shape[-1]), "bicubic")
    return np.concatenate([posemb[:1], np.asarray(grid).reshape(new_grid * new_grid, -1)]).astype(posemb.dtype)


def load_training_weights(training_model: keras.Model, init_dir: str | Path, num_classes: int) -> None:
    """Load `init_dir`'s training weights into `training_model`, resizing position embeddings when
    the input resolution changed (fine-tuning at a higher resolution)."""
    init_dir = Path(init_dir)
    weights = init_dir / TRAINING_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {TRAINING_WEIGHTS} in {init_dir}: run the training notebook first")
    old_cfg = ModelConfig.load(init_dir / "model_config.json")
    source = build_training_model(build_embedding_model(old_cfg), num_classes, old_cfg.head)
    source.load_weights(weights)
    old = {v.path: v for v in source.weights}
    for v in training_model.weights:
        if v.path not in old:
            raise ValueError(f"{init_dir} has no weight {v.path}: the model configs differ in more than resolution")
        value = np.asarray(keras.ops.convert_to_numpy(old[v.path]))
        if v.path.endswith(POSEMB) and value.shape != tuple(v.shape):
            value = resize_positional_embedding(value, v.shape[0])
            print(f"interpolated {v.path}: {old[v.path].shape} -> {tuple(v.shape)}")
        if value.shape != tuple(v.shape):
            raise ValueError(f"{v.path}: {init_dir} has shape {value.shape}, this model {tuple(v.shape)}")
        v.assign(value)
