"""The ViT backbone: position-embedding interpolation, resolution change, full-size ViT-H-14 parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _backbone_helpers import open_clip_model, random_images, torch_features
from guie_nb.model.backbones import vit_config
from guie_nb.model.convert import keras_to_open_clip_state_dict, open_clip_to_keras
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.model.posemb import resample_grid, resample_pos_embed, resize_model_resolution, resize_vit
from guie_nb.model.vit import build_vit


@pytest.mark.parametrize("old, new", [(16, 20), (16, 10), (7, 9), (14, 5), (8, 8)])
def test_resample_grid_matches_torch_antialiased_bicubic(old, new):
    grid = np.random.RandomState(old * new).randn(old, old, 6).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(grid).permute(2, 0, 1)[None], size=(new, new), mode="bicubic", antialias=True,
        align_corners=False,
    )[0].permute(1, 2, 0).numpy()
    assert np.abs(resample_grid(grid, new) - expected).max() < 1e-5


def test_resample_pos_embed_keeps_class_token_like_open_clip():
    from open_clip.model import resize_pos_embed

    oc = open_clip_model("ViT-S-32", image_size=64)  # grid 2
    pos = oc.visual.positional_embedding.detach().numpy()
    state = {"visual.positional_embedding": torch.from_numpy(pos.copy())}
    target = open_clip_model("ViT-S-32", image_size=160)  # grid 5
    resize_pos_embed(state, target)  # open_clip's own loader-side resampling
    ours = resample_pos_embed(pos, 5)
    np.testing.assert_array_equal(ours[0], pos[0])
    assert np.abs(ours - state["visual.positional_embedding"].numpy()).max() < 1e-5
    with pytest.raises(ValueError, match="square"):
        resample_pos_embed(pos[:-1], 5)


def test_resize_vit_and_embedding_model_carry_weights():
    cfg = vit_config("demo-tiny")
    vit = build_vit(cfg)
    bigger = resize_vit(vit, cfg, 96)
    a, b = keras_to_open_clip_state_dict(vit), keras_to_open_clip_state_dict(bigger)
    for key in a:
        if key != "positional_embedding":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert b["positional_embedding"].shape == (1 + 12 * 12, cfg.width)
    np.testing.assert_allclose(b["positional_embedding"], resample_pos_embed(a["positional_embedding"], 12), atol=1e-6)

    model_cfg = ModelConfig(backbone="demo-tiny", dropout=0.0)
    model = build_embedding_model(model_cfg)
    same, same_cfg = resize_model_resolution(model, model_cfg, 64)  # same size: identical outputs
    images = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(same(images)), np.asarray(model(images)), atol=1e-6)
    resized, new_cfg = resize_model_resolution(model, model_cfg, 80)
    assert new_cfg.input_size == 80 and resized.input_shape == (None, 80, 80, 3)
    np.testing.assert_array_equal(resized.get_layer("projection").kernel, model.get_layer("projection").kernel)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        resize_model_resolution(model, model_cfg, 70)


@pytest.mark.slow
def test_vit_h14_full_size_matches_open_clip():
    """open_clip ViT-H-14 (632 M visual parameters, random init) -> Keras, float32, 224 px."""
    oc = open_clip_model("ViT-H-14")
    keras_vit = open_clip_to_keras(oc, build_vit(vit_config("ViT-H-14")))
    images = random_images(1, 224)
    expected = torch_features(oc.visual, images)
    del oc
    got = np.asarray(keras_vit.predict(images, verbose=0))
    assert got.shape == expected.shape == (1, 1024)
    assert np.abs(got - expected).max() <= 1e-4
