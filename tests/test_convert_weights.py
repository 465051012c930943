"""Weights one parameter away: files, folders, KerasHub presets, and fast offline errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from _backbone_helpers import open_clip_tower, random_images, torch_features
from guie_nb.model.backbones import vit_config
from guie_nb.model.convert import keras_to_open_clip_state_dict
from guie_nb.model.vit import build_vit
from guie_nb.model.weights import WeightsUnavailable, load_backbone_weights

CFG = vit_config("demo-tiny")


def _assert_same_weights(a, b):
    sa, sb = keras_to_open_clip_state_dict(a), keras_to_open_clip_state_dict(b)
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_torch_bin_file_and_folder(tmp_path):
    tower = open_clip_tower(CFG)
    torch.save({"visual." + k: v for k, v in tower.state_dict().items()}, tmp_path / "open_clip_pytorch_model.bin")
    model = load_backbone_weights(build_vit(CFG), str(tmp_path / "open_clip_pytorch_model.bin"))
    images = random_images(2, 64)
    assert np.abs(np.asarray(model(images)) - torch_features(tower, images)).max() <= 1e-4
    _assert_same_weights(model, load_backbone_weights(build_vit(CFG), str(tmp_path)))


def test_safetensors_file_needs_no_torch(tmp_path):
    from safetensors.numpy import save_file

    source = build_vit(CFG)
    save_file(keras_to_open_clip_state_dict(source, prefix="visual."), str(tmp_path / "w.safetensors"))
    _assert_same_weights(source, load_backbone_weights(build_vit(CFG), str(tmp_path / "w.safetensors")))


def _keras_hub_clip(cfg, seed=0):
    import keras
    import keras_hub

    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=cfg.patch_size, hidden_dim=cfg.width, num_layers=cfg.layers, num_heads=cfg.heads,
        intermediate_dim=cfg.mlp_width, intermediate_activation="quick_gelu" if cfg.quick_gelu else "gelu",
        image_shape=(cfg.image_size, cfg.image_size, 3),
    )
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=64, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=8,
    )
    clip = keras_hub.models.CLIPBackbone(vision, text, projection_dim=cfg.output_dim)
    rng = np.random.RandomState(seed)  # every weight random: zero biases would hide mistakes

    def fill(v, w):
        if "position_ids" in v.path:  # the presets store arange; a fresh encoder has zeros
            return np.arange(w.size, dtype=w.dtype).reshape(w.shape)
        if w.dtype.kind in "iu":
            return w
        return np.asarray(0.02 * rng.randn(*w.shape) + (1.0 if "gamma" in v.path else 0.0), w.dtype)

    clip.set_weights([fill(v, w) for v, w in zip(clip.weights, clip.get_weights())])
    return clip


def test_keras_hub_preset_folder(tmp_path, monkeypatch):
    cfg = vit_config("demo-tiny")
    clip = _keras_hub_clip(cfg)
    clip.save_to_preset(str(tmp_path / "preset"))  # the layout of the Kaggle Model files
    model = load_backbone_weights(build_vit(cfg), str(tmp_path / "preset"))
    images = random_images(2, 64)
    expected = np.asarray(clip.get_vision_embeddings(images))
    assert np.abs(np.asarray(model(images)) - expected).max() <= 1e-4
    # an attached Kaggle Model is found under /kaggle/input/<model>/<framework>/<variation>/<version>
    attached = tmp_path / "input" / "clip" / "keras" / "tiny" / "3"
    attached.parent.mkdir(parents=True)
    (tmp_path / "preset").rename(attached)
    monkeypatch.setenv("GUIE_KAGGLE_INPUT", str(tmp_path / "input"))
    _assert_same_weights(model, load_backbone_weights(build_vit(cfg), "kaggle:keras/clip/keras/tiny/3"))


def test_offline_errors_are_immediate(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("GUIE_KAGGLE_INPUT", str(tmp_path / "no-input"))
    model = build_vit(CFG)
    for spec, backbone in [
        ("open_clip:laion2b_s32b_b79k", "ViT-H-14"),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "ViT-B-32"),  # settings agree: the download is reached
        ("kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3", ""),
        (str(tmp_path / "missing.safetensors"), ""),
        (str(tmp_path / "nothing-here"), ""),
    ]:
        start = time.monotonic()
        with pytest.raises(WeightsUnavailable, match="Attach the Kaggle Model"):
            load_backbone_weights(model, spec, backbone)
        assert time.monotonic() - start < 5, spec
    with pytest.raises(ValueError, match="no pretrained tag"):
        load_backbone_weights(model, "open_clip:no_such_tag", "ViT-H-14")
    assert load_backbone_weights(model, "none") is model
