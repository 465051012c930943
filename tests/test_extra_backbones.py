"""Concatenated backbones (`ModelConfig.extra_backbones`): the Keras model, its weights loading,
the TorchScript module and both exports in the scorer runtimes, and PCA over the concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _export_helpers import (assert_submission_verified, assert_torchscript_reproduces_keras, save_demo_model,
                             two_tower_model)
from guie_nb.model.embedding import ModelConfig, build_embedding_model

EXTRA = [{"backbone": "demo-tiny-quickgelu", "backbone_weights": ""}]


def _model(seed=0, **kw):
    return two_tower_model(EXTRA, seed, **kw)


def test_features_are_the_backbones_concatenated():
    from guie_nb.model.reduction import feature_model

    cfg, model = _model()
    assert cfg.feature_dim == 96 + 96 and model.get_layer("projection").kernel.shape == (192, 64)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    feats = np.asarray(feature_model(model).predict_on_batch(pixels))
    normalised = np.asarray(model.get_layer("clip_normalize")(pixels))
    main = np.asarray(model.get_layer("visual")(normalised))
    extra = np.asarray(model.get_layer("visual_1")(normalised))
    np.testing.assert_allclose(feats, np.concatenate([main, extra], axis=1), atol=1e-5)
    assert not np.allclose(main, extra)  # two towers, two sets of weights (and GELU vs QuickGELU)


def test_bad_extra_backbones_are_named():
    with pytest.raises(ValueError, match=r"extra_backbones entries are .*got \{'name': 'ViT-B-32'\}"):
        ModelConfig(extra_backbones=[{"name": "ViT-B-32"}])
    with pytest.raises(ValueError, match="unknown backbone 'ViT-X'"):
        ModelConfig(extra_backbones=[{"backbone": "ViT-X"}])
    with pytest.raises(ValueError, match="input size 64 is not a multiple of its patch size 14"):
        ModelConfig(backbone="demo-tiny", extra_backbones=["ViT-L-14"])


def test_each_backbone_gets_its_own_pretrained_weights(tmp_path):
    """`load_pretrained_backbones`: the extra tower reads its own file (an open_clip state dict)."""
    from guie_nb.model.convert import keras_to_open_clip_state_dict
    from guie_nb.model.weights import load_pretrained_backbones

    _, donor = _model(seed=5)
    source = keras_to_open_clip_state_dict(donor.get_layer("visual_1"))
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"visual." + k: torch.from_numpy(v) for k, v in source.items()}, path)
    cfg = ModelConfig(backbone="demo-tiny", dropout=0.0,
                      extra_backbones=[{"backbone": "demo-tiny-quickgelu", "backbone_weights": str(path)}])
    model = build_embedding_model(cfg)
    before = keras_to_open_clip_state_dict(model.get_layer("visual"))
    load_pretrained_backbones(model, cfg)
    loaded = keras_to_open_clip_state_dict(model.get_layer("visual_1"))
    for k, v in source.items():
        np.testing.assert_array_equal(loaded[k], v)
    for k, v in keras_to_open_clip_state_dict(model.get_layer("visual")).items():  # main untouched ("" = random)
        np.testing.assert_array_equal(v, before[k])


def test_torch_module_reproduces_the_two_tower_model(tmp_path):
    cfg, model = _model(hidden_dim=32, resize_mode="shortest_side_crop")
    assert_torchscript_reproduces_keras(model, cfg, tmp_path)


@pytest.mark.parametrize("fmt", ["saved_model", "torchscript"])
def test_two_tower_submission_verified_in_scorer_runtime(tmp_path, fmt):
    assert_submission_verified(save_demo_model(tmp_path / "model", extra_backbones=EXTRA), fmt, tmp_path)


def test_pca_over_the_concatenated_features():
    """PCA of the concatenated 192-d features to 64-d, in `projection`: the model's output is the
    L2-normalised numpy projection of the concatenation."""
    from guie_nb.model.reduction import feature_model, fit_reduction, set_projection

    cfg, model = _model()
    pixels = np.random.default_rng(1).uniform(0, 255, (80, 64, 64, 3)).astype("float32")
    feats = np.asarray(feature_model(model).predict_on_batch(pixels), np.float64)
    red = fit_reduction(feats, 64, "pca")
    set_projection(model, red)
    y = (feats - feats.mean(axis=0)) @ red.kernel.astype(np.float64)
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(pixels)),
                               y / np.linalg.norm(y, axis=1, keepdims=True), atol=2e-5)


def test_two_tower_model_trains_a_step(tmp_path):
    """Training with an extra backbone: the step compiles and runs, and the run folder reloads to
    the two-tower model (the Keras variable paths of the two towers repeat: the checkpoint state
    goes by variable order, and each tower's block i is in parameter group block_i)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _training_helpers import make_small_data
    from guie_nb.run_dir import load_embedding_model
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    data = make_small_data(tmp_path / "data")
    cfg = ModelConfig(backbone="demo-tiny", extra_backbones=EXTRA, dropout=0.0)
    metrics = train(data, tmp_path / "run", cfg, TrainConfig.from_dict(
        {"batch_size": 16, "epochs": 1, "steps_per_epoch": 1, "steps_per_execution": 1, "checkpoint_every": 0}))
    assert metrics["step"] == 1
    model, loaded_cfg = load_embedding_model(tmp_path / "run")
    assert loaded_cfg.extra_backbones == EXTRA and model.get_layer("visual_1") is not None


def test_parameter_groups_of_two_towers():
    """Both towers' variables have groups (their paths repeat: `conv1/kernel` twice, in `stem`), and
    an extra tower deeper than `backbone` is refused before anything is built."""
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import build_step

    train_cfg = TrainConfig.from_dict({"batch_size": 16, "epochs": 1, "steps_per_epoch": 1, "steps_per_execution": 1})
    run = build_step(ModelConfig(backbone="demo-tiny", extra_backbones=EXTRA), train_cfg, 10, 1)
    groups = [g for p, g in zip(run.plan.paths, run.plan.groups) if p == "conv1/kernel"]
    assert groups == ["stem", "stem"]
    last_block = [(p, g) for p, g in zip(run.plan.paths, run.plan.groups) if p.startswith("resblocks_3/")]
    assert {g for _, g in last_block} == {"block_3"}
    assert len(last_block) == 2 * len({p for p, _ in last_block}) > 0  # each path once per tower
    with pytest.raises(ValueError, match="more blocks than backbone"):
        build_step(ModelConfig(backbone="demo-tiny", extra_backbones=["ViT-S-32"]), train_cfg, 10, 1)


def test_scoring_estimate_counts_every_tower():
    """The scorer runs each concatenated backbone on every image: a second copy of the backbone
    doubles the estimated FLOPs, given as a preset states it (dict) or as a ModelConfig."""
    from guie_nb.preflight import scoring_estimate

    one = scoring_estimate({"backbone": "ViT-B-32"})
    two = scoring_estimate({"backbone": "ViT-B-32", "extra_backbones": [{"backbone": "ViT-B-32"}]})
    assert two["flops_per_image"] == pytest.approx(2 * one["flops_per_image"])
    cfg = ModelConfig(backbone="ViT-B-32", extra_backbones=["ViT-B-32"])
    assert scoring_estimate(cfg)["flops_per_image"] == pytest.approx(two["flops_per_image"])
