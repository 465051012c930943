"""open_clip ViT <-> Keras conversion: forward parity on random-init open_clip towers.

One named open_clip model (ViT-S-32 through `create_model`) and, for speed, the demo-tiny shape
built by open_clip's own tower builder at several sizes (shapes repeat so JAX compiles once).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _backbone_helpers import open_clip_model, open_clip_tower, random_images, torch_features
from guie_nb.model.backbones import VIT_CONFIGS, vit_config
from guie_nb.model.convert import keras_to_open_clip_state_dict, open_clip_to_keras, vit_config_from_state_dict
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.model.vit import build_vit

TOL = 1e-4


def test_named_open_clip_model_matches_forward():
    oc = open_clip_model("ViT-S-32")  # 224 px, GELU
    keras_vit = open_clip_to_keras(oc, build_vit(vit_config("ViT-S-32")))
    images = random_images(2, 224)
    expected = torch_features(oc.visual, images)
    got = np.asarray(keras_vit(images))
    assert got.shape == expected.shape == (2, 384)
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.parametrize("image_size, quick_gelu", [(224, True), (96, False), (96, True)])
def test_open_clip_tower_matches_forward(image_size, quick_gelu):
    cfg = vit_config("demo-tiny", image_size=image_size, quick_gelu=quick_gelu)
    tower = open_clip_tower(cfg)
    keras_vit = open_clip_to_keras(tower, build_vit(cfg))
    images = random_images(3, image_size)
    expected = torch_features(tower, images)
    assert np.abs(np.asarray(keras_vit(images)) - expected).max() <= TOL
    if image_size == 96 and quick_gelu:  # the wrong activation is caught: the check can fail
        other = open_clip_to_keras(tower, build_vit(vit_config("demo-tiny", image_size=96)))
        assert np.abs(np.asarray(other(images)) - expected).max() > 10 * TOL


def test_round_trip_keras_state_dict_open_clip():
    cfg = vit_config("demo-tiny", image_size=96)
    keras_vit = build_vit(cfg)
    sd = keras_to_open_clip_state_dict(keras_vit)
    tower = open_clip_tower(cfg, seed=1)  # other weights, overwritten below
    tower.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    images = random_images(2, 96, seed=1)
    assert np.abs(torch_features(tower, images) - np.asarray(keras_vit(images))).max() <= TOL
    # full-CLIP key names ("visual." prefix) and back again
    full = keras_to_open_clip_state_dict(keras_vit, prefix="visual.")
    assert set(full) == {"visual." + k for k in sd}
    again = keras_to_open_clip_state_dict(open_clip_to_keras(full, build_vit(cfg)))
    for key in sd:
        np.testing.assert_array_equal(again[key], sd[key], err_msg=key)


def test_named_model_round_trip_into_clip_model():
    oc = open_clip_model("ViT-S-32", image_size=64)
    model = build_embedding_model(ModelConfig(backbone="ViT-S-32", image_size=64, dropout=0.0))
    open_clip_to_keras(oc.state_dict(), model)  # a full CLIP state dict into the embedding model
    sd = keras_to_open_clip_state_dict(model, prefix="visual.")
    target = open_clip_model("ViT-S-32", image_size=64, seed=3)
    missing, unexpected = target.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not unexpected and not any(k.startswith("visual.") for k in missing)
    for key, value in oc.visual.state_dict().items():
        np.testing.assert_array_equal(target.visual.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_positional_embedding_resampled_on_load():
    from guie_nb.model.posemb import resample_pos_embed

    tower = open_clip_tower(vit_config("demo-tiny"))  # 64 px: grid 8
    keras_vit = open_clip_to_keras(tower, build_vit(vit_config("demo-tiny", image_size=96)))
    pos = tower.positional_embedding.detach().numpy()
    np.testing.assert_allclose(
        np.asarray(keras_vit.get_layer("embeddings").positional_embedding), resample_pos_embed(pos, 12), atol=1e-6
    )
    with pytest.raises(ValueError, match="positional_embedding"):
        open_clip_to_keras(tower, keras_vit, resize_pos_embed=False)


def test_mismatched_weights_are_named():
    tower = open_clip_tower(vit_config("demo-tiny"))
    with pytest.raises(ValueError, match="conv1.weight"):
        open_clip_to_keras(tower, build_vit(vit_config("demo-tiny", patch_size=16)))
    with pytest.raises(ValueError, match="not an open_clip ViT"):
        open_clip_to_keras({"foo": np.zeros(3)}, build_vit(vit_config("demo-tiny")))
    with pytest.raises(TypeError, match="state dict"):
        open_clip_to_keras([1, 2], build_vit(vit_config("demo-tiny")))


def test_config_inferred_from_state_dict():
    cfg = vit_config("demo-tiny", image_size=96)
    inferred = vit_config_from_state_dict(open_clip_tower(cfg).state_dict(), head_width=cfg.width // cfg.heads)
    assert inferred == cfg


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
