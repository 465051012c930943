"""A concatenated backbone at its own resolution (`extra_backbones[i]["image_size"]`): the in-graph
resize equals TensorFlow's antialiased bicubic resize of the 0..255 pixels, and the Keras model,
the TorchScript module and the SavedModel compute the same embedding."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from _export_helpers import (assert_submission_verified, assert_torchscript_reproduces_keras, save_demo_model,
                             two_tower_model)
from guie_nb.model.embedding import ModelConfig
from guie_nb.model.tower_input import TowerResize, resize_matrix

SMALL = [{"backbone": "demo-tiny-quickgelu", "backbone_weights": "", "image_size": 32}]


@pytest.mark.parametrize("sizes", [(64, 32), (336, 224), (64, 48), (32, 64)])
def test_resize_matrix_is_tf_antialiased_bicubic(sizes):
    s, t = sizes
    x = np.random.default_rng(0).uniform(0, 255, (2, s, s, 3)).astype(np.float32)
    r = resize_matrix(s, t).astype(np.float64)
    ours = np.einsum("oh,bhwc->bowc", r, np.einsum("pw,bhwc->bhpc", r, x.astype(np.float64)))
    tf_out = tf.image.resize(x, (t, t), method="bicubic", antialias=True).numpy()
    np.testing.assert_allclose(ours, tf_out, atol=2e-3)  # 0..255 units: float32 rounding in TF


def test_matches_the_torchscript_weights():
    from guie_nb.export.torchscript import _resize_weights

    for s, t in ((64, 32), (336, 224), (290, 224)):
        np.testing.assert_allclose(resize_matrix(s, t), _resize_weights(s, t).numpy(), atol=5e-5)  # float32 there


def test_layer_is_resize_then_clip_then_normalise():
    """Resizing normalised pixels and clipping to the normalised 0..255 range is the pipeline's
    resize -> clip(0, 255) -> CLIP normalisation."""
    from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD

    pixels = np.random.default_rng(1).choice([0.0, 255.0], (2, 64, 64, 3)).astype(np.float32)  # overshoots
    mean, std = 255 * np.asarray(CLIP_MEAN, np.float32), 255 * np.asarray(CLIP_STD, np.float32)
    got = np.asarray(TowerResize(64, 32)((pixels - mean) / std))
    want = (np.clip(tf.image.resize(pixels, (32, 32), "bicubic", antialias=True).numpy(), 0, 255) - mean) / std
    np.testing.assert_allclose(got, want, atol=2e-4)


def _model(seed=0, **kw):
    return two_tower_model(SMALL, seed, **kw)


def test_the_tower_sees_its_own_resolution():
    from guie_nb.model.reduction import feature_model

    cfg, model = _model()
    assert [v.image_size for v in cfg.extra_vits] == [32] and cfg.input_size == 64
    assert model.get_layer("visual_1").input.shape[1:3] == (32, 32)
    assert not model.get_layer("visual_1_resize").weights  # no weight: towers load as before
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    normalised = np.asarray(model.get_layer("clip_normalize")(pixels))
    extra = np.asarray(model.get_layer("visual_1")(np.asarray(TowerResize(64, 32)(normalised))))
    np.testing.assert_allclose(np.asarray(feature_model(model).predict_on_batch(pixels))[:, 96:], extra, atol=1e-5)


def test_bad_tower_sizes_are_named():
    with pytest.raises(ValueError, match="its image_size 30 is not a multiple of its patch size 8"):
        ModelConfig(backbone="demo-tiny", extra_backbones=[{"backbone": "demo-tiny", "image_size": 30}])
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        ModelConfig(backbone="demo-tiny", extra_backbones=[{"backbone": "demo-tiny", "image_size": "32"}])


@pytest.mark.parametrize("flip_tta", [False, True])
def test_torchscript_reproduces_the_resized_tower(tmp_path, flip_tta):
    cfg, model = _model(hidden_dim=32, resize_mode="shortest_side_crop", flip_tta=flip_tta)
    assert_torchscript_reproduces_keras(model, cfg, tmp_path)


@pytest.mark.parametrize("fmt", ["saved_model", "torchscript"])
def test_resized_tower_submission_verified_in_scorer_runtime(tmp_path, fmt):
    assert_submission_verified(save_demo_model(tmp_path / "model", extra_backbones=SMALL), fmt, tmp_path)
