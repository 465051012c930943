"""open_clip ViT <-> Keras conversion: forward parity on random-init open_clip towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _backbone_helpers import open_clip_model, random_images, torch_features
from guie_nb.model.backbones import VIT_CONFIGS, vit_config
from guie_nb.model.convert import keras_to_open_clip_state_dict, open_clip_to_keras, vit_config_from_state_dict
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.model.vit import build_vit

TOL = 1e-4


@pytest.mark.parametrize(
    "name, image_size, quick_gelu",
    [("ViT-S-32", 224, False), ("ViT-S-32", 160, True), ("ViT-S-16", 96, False)],
)
def test_open_clip_to_keras_matches_forward(name, image_size, quick_gelu):
    oc = open_clip_model(name, image_size, quick_gelu)
    keras_vit = build_vit(vit_config(name, image_size=image_size, quick_gelu=quick_gelu))
    open_clip_to_keras(oc, keras_vit)
    images = random_images(2, image_size)
    expected = torch_features(oc.visual, images)
    got = np.asarray(keras_vit(images))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL
    # a wrong activation is caught at this tolerance: the check can fail
    other = build_vit(vit_config(name, image_size=image_size, quick_gelu=not quick_gelu))
    open_clip_to_keras(oc, other)
    assert np.abs(np.asarray(other(images)) - expected).max() > 10 * TOL


def test_round_trip_keras_state_dict_open_clip():
    keras_vit = build_vit(vit_config("ViT-S-32", image_size=160))
    sd = keras_to_open_clip_state_dict(keras_vit)
    oc = open_clip_model("ViT-S-32", 160, seed=1)  # other weights, overwritten below
    oc.visual.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    images = random_images(2, 160, seed=1)
    assert np.abs(torch_features(oc.visual, images) - np.asarray(keras_vit(images))).max() <= TOL
    # the full-CLIP naming loads into a CLIP model, leaving only the text tower untouched
    full = keras_to_open_clip_state_dict(keras_vit, prefix="visual.")
    missing, unexpected = oc.load_state_dict({k: torch.from_numpy(v) for k, v in full.items()}, strict=False)
    assert not unexpected and not any(k.startswith("visual.") for k in missing)


def test_convert_into_embedding_model_and_from_full_state_dict():
    oc = open_clip_model("ViT-S-32", 64)
    model = build_embedding_model(ModelConfig(backbone="ViT-S-32", image_size=64, dropout=0.0))
    open_clip_to_keras(oc.state_dict(), model)  # full CLIP keys, "visual." prefixed
    sd = keras_to_open_clip_state_dict(model)
    for key, value in oc.visual.state_dict().items():
        np.testing.assert_array_equal(sd[key], value.numpy(), err_msg=key)


def test_positional_embedding_resampled_on_load():
    from guie_nb.model.posemb import resample_pos_embed

    oc = open_clip_model("ViT-S-32", 224)
    keras_vit = build_vit(vit_config("ViT-S-32", image_size=288))
    open_clip_to_keras(oc, keras_vit)
    pos = oc.visual.positional_embedding.detach().numpy()
    np.testing.assert_allclose(
        np.asarray(keras_vit.get_layer("embeddings").positional_embedding), resample_pos_embed(pos, 9), atol=1e-6
    )
    with pytest.raises(ValueError, match="positional_embedding"):
        open_clip_to_keras(oc, build_vit(vit_config("ViT-S-32", image_size=288)), resize_pos_embed=False)


def test_mismatched_weights_are_named():
    oc = open_clip_model("ViT-S-32", 64)
    with pytest.raises(ValueError, match="conv1.weight"):
        open_clip_to_keras(oc, build_vit(vit_config("ViT-M-32", image_size=64)))
    with pytest.raises(ValueError, match="not an open_clip ViT"):
        open_clip_to_keras({"foo": np.zeros(3)}, build_vit(vit_config("demo-tiny")))


def test_config_inferred_from_state_dict():
    oc = open_clip_model("ViT-S-32", 64)
    cfg = vit_config_from_state_dict(oc.state_dict())
    assert cfg == vit_config("ViT-S-32", image_size=64)


@pytest.mark.parametrize("name", [n for n in VIT_CONFIGS if n != "demo-tiny"])
def test_named_configs_match_open_clip(name):
    import open_clip

    oc = open_clip.get_model_config(name)
    vision = oc["vision_cfg"]
    cfg = vit_config(name)
    assert cfg.image_size == vision["image_size"] and cfg.patch_size == vision["patch_size"]
    assert cfg.width == vision["width"] and cfg.layers == vision["layers"]
    assert cfg.heads == vision["width"] // vision.get("head_width", 64)
    assert cfg.mlp_width == int(vision["width"] * vision.get("mlp_ratio", 4.0))
    assert cfg.output_dim == oc["embed_dim"]
    assert cfg.quick_gelu == oc.get("quick_gelu", False)
    assert vit_config(name + "-quickgelu").quick_gelu
