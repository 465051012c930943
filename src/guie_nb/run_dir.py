"""A training run's folder: the one place that names its files, and reads the model back.

Written by `guie_nb.training.trainer.train` (02 train, 03 fine-tune), and by the export notebook
for a model it builds itself (a zero-shot model, a weight soup: `save_embedding_model`, which
writes only `model_config.json` + `embedding.weights.h5`); read by fine-tuning
(`guie_nb.training.transfer`), export (04, `guie_nb.export`), soups (`guie_nb.model.soup`),
preflight and the benchmarks:

| file                         | what                                                        |
|------------------------------|-------------------------------------------------------------|
| `model_config.json`          | `ModelConfig` of the run (backbone, neck, head, input size) |
| `train_config.json`          | `TrainConfig` of the run                                    |
| `training_model.weights.h5`  | embedding model + margin head (to fine-tune from)           |
| `embedding.weights.h5`       | embedding model only (to export)                            |
| `history.csv`                | one row per epoch: loss, accuracy, learning rate, val mP@5  |
| `metrics.json`               | initial and final scores, steps, timings, devices           |
| `checkpoints/`               | Orbax checkpoints to resume from (`guie_nb.training.checkpoint`) |

Importing this module does not import Keras (the export picks Keras' backend first).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

    from guie_nb.model.embedding import ModelConfig

MODEL_CONFIG = "model_config.json"
TRAIN_CONFIG = "train_config.json"
TRAINING_WEIGHTS = "training_model.weights.h5"
EMBEDDING_WEIGHTS = "embedding.weights.h5"
HISTORY = "history.csv"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"

# what a finished run leaves for the next notebook (fine-tuning needs the training weights, export the embedding's)
MODEL_FILES = (MODEL_CONFIG, TRAINING_WEIGHTS, EMBEDDING_WEIGHTS)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}: run the training notebook first "
                                "(or point at the folder a training run wrote)")
    return path


def load_model_config(run_dir: str | Path) -> "ModelConfig":
    """The run's `ModelConfig` (`run_dir/model_config.json`). Raises FileNotFoundError if absent."""
    from guie_nb.model.embedding import ModelConfig

    return ModelConfig.load(_require(Path(run_dir) / MODEL_CONFIG))


def load_embedding_model(run_dir: str | Path) -> tuple["keras.Model", "ModelConfig"]:
    """The trained embedding model (images `[B, S, S, 3]` uint8-range floats -> L2-normalised
    `[B, embedding_dim]`) and its config, from `run_dir/model_config.json` and
    `run_dir/embedding.weights.h5`, on Keras' current backend. Raises FileNotFoundError if either is absent."""
    from guie_nb.model.embedding import build_embedding_model

    cfg = load_model_config(run_dir)
    weights = _require(Path(run_dir) / EMBEDDING_WEIGHTS)
    model = build_embedding_model(cfg)
    model.load_weights(weights)
    return model, cfg


def save_embedding_model(run_dir: str | Path, model: "keras.Model", cfg: "ModelConfig") -> Path:
    """Write `cfg` (`model_config.json`) and the embedding model's weights (`embedding.weights.h5`)
    into `run_dir` (created if absent): the folder `load_embedding_model` and the export read. Used
    for a model no training run wrote (zero-shot, soup). Returns `run_dir` as a Path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / MODEL_CONFIG)
    model.save_weights(run_dir / EMBEDDING_WEIGHTS)
    return run_dir
