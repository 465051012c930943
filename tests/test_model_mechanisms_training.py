"""The model mechanisms through the trainer: a run with neck branches, size features and flip TTA
from pretrained weights, then a fine-tune of it into overlapping patches (1st place's stride-14 ->
stride-12 stage), both at demo scale with a frozen backbone, so the carried weights can be checked."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _training_helpers import make_small_data  # noqa: E402

from guie_nb.model.convert import keras_to_open_clip_state_dict
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.model.posemb import resample_pos_embed
from guie_nb.training.config import TrainConfig
from guie_nb.run_dir import EMBEDDING_WEIGHTS
from guie_nb.training.trainer import train

TRAIN = {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "steps_per_epoch": 2, "freeze_backbone": True}


def _backbone(run_dir: Path, cfg: ModelConfig) -> dict[str, np.ndarray]:
    model = build_embedding_model(cfg)
    model.load_weights(run_dir / EMBEDDING_WEIGHTS)
    return keras_to_open_clip_state_dict(model)


def test_mechanisms_train_and_fine_tune_into_overlapping_patches(tmp_path):
    from safetensors.numpy import save_file

    data = make_small_data(tmp_path / "small")
    keras.utils.set_random_seed(123)
    pretrained = keras_to_open_clip_state_dict(build_embedding_model(ModelConfig(backbone="demo-tiny")))
    weights = tmp_path / "open_clip_visual.safetensors"
    save_file(pretrained, str(weights))

    first = ModelConfig(backbone="demo-tiny", backbone_weights=str(weights), neck_branches=3, size_features=True,
                        flip_tta=True, head={"kind": "arcface", "scale": 16.0, "margin": 0.1})
    metrics = train(data, tmp_path / "first", first, TrainConfig.from_dict(TRAIN))
    assert metrics["step"] == 2 and 0.0 <= metrics["final"]["map5"] <= 1.0
    assert metrics["train_step_compilations"] == 1  # the size input and TTA layers trace once
    header, row = (tmp_path / "first" / "history.csv").read_text().splitlines()
    assert np.isfinite(float(dict(zip(header.split(","), row.split(",")))["loss"]))
    carried = _backbone(tmp_path / "first", first)
    for key, value in pretrained.items():  # frozen: exactly the loaded weights
        np.testing.assert_array_equal(carried[key], value, err_msg=key)

    # 03: the same model at stride 6 (patch 8) and 62 px, from the first run's output
    second = replace(first, backbone_weights="", image_size=62, patch_stride=6)
    train(data, tmp_path / "second", second, TrainConfig.from_dict(TRAIN), init_dir=tmp_path / "first")
    overlapped = _backbone(tmp_path / "second", second)
    assert overlapped["positional_embedding"].shape == (101, 96)
    np.testing.assert_allclose(overlapped["positional_embedding"],
                               resample_pos_embed(pretrained["positional_embedding"], 10), atol=1e-6)
    np.testing.assert_array_equal(overlapped["conv1.weight"], pretrained["conv1.weight"])
