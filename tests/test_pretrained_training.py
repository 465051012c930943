"""The training notebook's `backbone_weights`: a fresh run starts from the given open_clip weights."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _training_helpers import make_small_data  # noqa: E402

from guie_nb.model.convert import keras_to_open_clip_state_dict
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.model.weights import WeightsUnavailable
from guie_nb.run_dir import EMBEDDING_WEIGHTS
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import train

TRAIN = {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "steps_per_epoch": 2, "freeze_backbone": True}


def test_fresh_run_starts_from_backbone_weights(tmp_path):
    from safetensors.numpy import save_file

    data = make_small_data(tmp_path / "small")
    keras.utils.set_random_seed(123)  # a backbone the trainer's own seed would not draw
    source = build_embedding_model(ModelConfig(backbone="demo-tiny")).get_layer("visual")
    weights = tmp_path / "open_clip_visual.safetensors"
    save_file(keras_to_open_clip_state_dict(source), str(weights))

    cfg = ModelConfig.from_dict({"backbone": "demo-tiny", "backbone_weights": str(weights),
                                 "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1}})
    train(data, tmp_path / "run", cfg, TrainConfig.from_dict(TRAIN))
    trained = build_embedding_model(cfg)
    trained.load_weights(tmp_path / "run" / EMBEDDING_WEIGHTS)
    # the backbone is frozen, so it still holds exactly the loaded weights
    for got, want in zip(trained.get_layer("visual").weights, source.weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)


def test_missing_backbone_weights_fail_before_training(tmp_path):
    data = make_small_data(tmp_path / "small")
    cfg = ModelConfig.from_dict({"backbone": "demo-tiny", "backbone_weights": str(tmp_path / "nope.safetensors")})
    with pytest.raises(WeightsUnavailable, match="nope.safetensors"):
        train(data, tmp_path / "run", cfg, TrainConfig.from_dict(TRAIN))
    assert not (tmp_path / "run" / EMBEDDING_WEIGHTS).exists()
