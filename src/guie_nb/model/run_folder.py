"""A run folder as the exporter reads it: `model_config.json` + the embedding model's weights
(the trainer's `EMBEDDING_WEIGHTS`). Written by training, and by the export notebook for a
zero-shot model or a soup."""

from __future__ import annotations

from pathlib import Path

MODEL_CONFIG = "model_config.json"


def embedding_weights_name() -> str:
    from guie_nb.training.trainer import EMBEDDING_WEIGHTS

    return EMBEDDING_WEIGHTS


def load_run(run_dir: str | Path):
    """`(ModelConfig, embedding model with the run's weights)`; FileNotFoundError naming what is missing."""
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    run_dir = Path(run_dir)
    for name in (MODEL_CONFIG, embedding_weights_name()):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: {run_dir} is not a run folder "
                                    "(model_config.json + embedding weights, as training writes them)")
    cfg = ModelConfig.load(run_dir / MODEL_CONFIG)
    model = build_embedding_model(cfg)
    model.load_weights(run_dir / embedding_weights_name())
    return cfg, model


def save_run(run_dir: str | Path, cfg, embedding_model) -> Path:
    """Write `cfg` and the model's weights as a run folder the exporter (and `load_run`) reads."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / MODEL_CONFIG)
    embedding_model.save_weights(run_dir / embedding_weights_name())
    return run_dir
