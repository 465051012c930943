"""Start a run from an earlier run's output: the weights of its training model (embedding +
head), at the same or a higher input resolution or another patch stride (position embeddings
interpolated by `guie_nb.model.posemb`)."""

from __future__ import annotations

from pathlib import Path

import keras

from guie_nb import run_dir
from guie_nb.model.embedding import build_embedding_model, build_training_model
from guie_nb.model.posemb import carry_weights


def load_training_weights(training_model: keras.Model, init_dir: str | Path, num_classes: int) -> None:
    """Load `init_dir`'s training weights (`run_dir.TRAINING_WEIGHTS`) into `training_model`; a
    changed patch grid (fine-tuning at a higher resolution, or with overlapping patches:
    `ModelConfig.patch_stride`) resamples the position embeddings. `flip_tta` may differ (it adds
    no weight); a changed neck (branches, size features) is refused by `carry_weights` naming the
    variable. Raises FileNotFoundError when `init_dir` holds no finished run."""
    init_dir = Path(init_dir)
    weights = init_dir / run_dir.TRAINING_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {run_dir.TRAINING_WEIGHTS} in {init_dir}: run the training notebook first")
    old_cfg = run_dir.load_model_config(init_dir)
    source = build_training_model(build_embedding_model(old_cfg), num_classes, old_cfg.head)
    source.load_weights(weights)
    old_rows = source.get_layer("embedding_model").get_layer("visual").get_layer("embeddings").positional_embedding
    new_rows = training_model.get_layer("embedding_model").get_layer("visual").get_layer("embeddings").positional_embedding
    if old_rows.shape != new_rows.shape:  # another resolution or patch stride: another patch grid
        print(f"input {old_cfg.input_size} px (stride {old_cfg.vit.stride}, {old_rows.shape[0]} tokens) -> "
              f"{training_model.input_shape[0][1]} px ({new_rows.shape[0]} tokens): position embeddings resampled")
    carry_weights(source, training_model)
