"""Start a run from an earlier run's output: the weights of its training model (embedding +
head), at the same or a higher input resolution (position embeddings interpolated by
`guie_nb.model.posemb`)."""

from __future__ import annotations

from pathlib import Path

import keras

from guie_nb import run_dir
from guie_nb.model.embedding import build_embedding_model, build_training_model
from guie_nb.model.posemb import carry_weights


def load_training_weights(training_model: keras.Model, init_dir: str | Path, num_classes: int) -> None:
    """Load `init_dir`'s training weights (`run_dir.TRAINING_WEIGHTS`) into `training_model`; a
    changed input resolution (fine-tuning at a higher resolution) resamples the position embeddings.
    Raises FileNotFoundError when `init_dir` holds no finished run."""
    init_dir = Path(init_dir)
    weights = init_dir / run_dir.TRAINING_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {run_dir.TRAINING_WEIGHTS} in {init_dir}: run the training notebook first")
    old_cfg = run_dir.load_model_config(init_dir)
    source = build_training_model(build_embedding_model(old_cfg), num_classes, old_cfg.head)
    source.load_weights(weights)
    if old_cfg.input_size != training_model.input_shape[0][1]:
        print(f"resolution {old_cfg.input_size} -> {training_model.input_shape[0][1]}: position embeddings resampled")
    carry_weights(source, training_model)
