"""Every setting a weights source states is honoured or refused, by the loader and the dry run alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _backbone_helpers import open_clip_tower, random_images, torch_features
from guie_nb.model.backbones import vit_config
from guie_nb.model.fidelity import (
    BackboneMismatch,
    SourceSettings,
    keras_hub_settings,
    open_clip_settings,
    settings_problems,
)
from guie_nb.model.vit import build_vit
from guie_nb.model.weights import WeightsUnavailable, load_backbone_weights, locate_weights
from guie_nb.model.weights_check import open_clip_tag_problems, weights_problems
from test_convert_weights import _keras_hub_clip

TINY = vit_config("demo-tiny")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing can be loaded


def test_open_clip_openai_into_gelu_blocks_is_refused_before_any_download(offline):
    """The issue's input: `open_clip:openai` with backbone ViT-B-32 (open_clip says QuickGELU)."""
    with pytest.raises(BackboneMismatch) as err:  # offline and with an empty cache: refused from the tables
        load_backbone_weights(build_vit(TINY), "open_clip:openai", "ViT-B-32")
    text = str(err.value)
    assert "quick_gelu True != False (configured)" in text and "open_clip ViT-B-32/openai" in text, text
    assert "use backbone 'ViT-B-32-quickgelu'" in text, text
    # the named fix passes the check and goes on to the (offline, so failing) download
    with pytest.raises(WeightsUnavailable):
        load_backbone_weights(build_vit(TINY), "open_clip:openai", "ViT-B-32-quickgelu")
    # the dry run says the same, without the file
    where = locate_weights("open_clip:openai", "ViT-B-32")
    assert where["open_clip"] == ["ViT-B-32", "openai"] and not where["found"]
    problems = weights_problems(where, vit_config("ViT-B-32"))
    assert any("use backbone 'ViT-B-32-quickgelu'" in p for p in problems), problems
    assert weights_problems(where, vit_config("ViT-B-32-quickgelu")) == [
        "backbone weights 'open_clip:openai' not found"]
    # what the training preflight adds while the file is not downloaded
    assert open_clip_tag_problems(where, vit_config("ViT-B-32")) == problems[:1]
    assert open_clip_tag_problems(where, vit_config("ViT-B-32-quickgelu")) == []


@pytest.mark.parametrize("name,tag,backbone,setting,fix", [
    ("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32-quickgelu", "quick_gelu False != True", "use backbone 'ViT-B-32'"),
    ("ViT-L-14-336", "openai", "ViT-L-14-quickgelu", "image_size 336 != 224", "ViT-L-14-336-quickgelu"),
    ("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-16", "patch_size 32 != 16", "use backbone 'ViT-B-32'"),
    ("ViT-B-16-SigLIP", "webli", "ViT-B-16", "mean (0.5, 0.5, 0.5) != ", "CLIP-normalised weights"),
    ("ViT-B-16-SigLIP", "webli", "ViT-B-16", "std (0.5, 0.5, 0.5) != ", "CLIP-normalised weights"),
])
def test_open_clip_tables_settings(name, tag, backbone, setting, fix):
    problems = settings_problems(open_clip_settings(name, tag), vit_config(backbone))
    assert any(setting in p and fix in p for p in problems), problems


def test_open_clip_tables_agree_where_they_should():
    assert settings_problems(open_clip_settings("ViT-H-14", "laion2b_s32b_b79k"), vit_config("ViT-H-14")) == []
    assert settings_problems(open_clip_settings("ViT-H-14-quickgelu", "dfn5b"), vit_config("ViT-H-14-quickgelu")) == []


def test_keras_hub_quick_gelu_preset(tmp_path):
    """A KerasHub preset whose `intermediate_activation` is quick_gelu: GELU refused, QuickGELU honoured."""
    quick = vit_config("demo-tiny-quickgelu")
    clip = _keras_hub_clip(quick)
    folder = tmp_path / "preset"
    clip.save_to_preset(str(folder))
    with pytest.raises(BackboneMismatch, match="quick_gelu True != False .*use backbone 'demo-tiny-quickgelu'"):
        load_backbone_weights(build_vit(TINY), str(folder), "demo-tiny")
    where = {"spec": str(folder), "source": "folder", "path": str(folder), "found": True}
    assert any("use backbone 'demo-tiny-quickgelu'" in p for p in weights_problems(where, TINY))
    assert weights_problems(where, quick) == []
    model = load_backbone_weights(build_vit(quick), str(folder), "demo-tiny-quickgelu")
    images = random_images(2, 64)
    assert np.abs(np.asarray(model(images)) - np.asarray(clip.get_vision_embeddings(images))).max() <= 1e-4


def test_keras_hub_image_converter_mean_std(tmp_path):
    """A preset's image converter (`x * scale + offset` on 0..255) states its mean and std."""
    import keras_hub

    folder = tmp_path / "preset"
    _keras_hub_clip(TINY).save_to_preset(str(folder))
    assert keras_hub_settings(folder).mean is None  # no converter saved: nothing stated, nothing checked

    def converter(mean, std):
        return keras_hub.layers.CLIPImageConverter(
            image_size=(64, 64), scale=[1 / (255 * s) for s in std], offset=[-m / s for m, s in zip(mean, std)])

    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    converter(clip_mean, clip_std).save_to_preset(str(folder))
    settings = keras_hub_settings(folder)
    np.testing.assert_allclose(settings.mean, clip_mean, atol=1e-7)
    assert settings_problems(settings, TINY) == []
    converter((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).save_to_preset(str(folder))
    with pytest.raises(BackboneMismatch, match=r"(?s)mean \(0.5, 0.5, 0.5\) != .*std \(0.5, 0.5, 0.5\) != "):
        load_backbone_weights(build_vit(TINY), str(folder), "demo-tiny")


def test_open_clip_file_settings(tmp_path):
    """A file's shapes state patch and image size; an `open_clip_config.json` beside it QuickGELU."""
    tower = open_clip_tower(TINY)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"visual." + k: v for k, v in tower.state_dict().items()}, path)
    # a backbone of another native size is refused; an image_size override of the right backbone resamples
    with pytest.raises(BackboneMismatch, match="image_size 64 != 96 .*configured"):
        load_backbone_weights(build_vit(vit_config("demo-tiny", image_size=96)), str(path))
    load_backbone_weights(build_vit(vit_config("demo-tiny", image_size=96)), str(path), "demo-tiny")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"quick_gelu": True, "vision_cfg": {"image_size": 64, "patch_size": 8}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    with pytest.raises(BackboneMismatch, match="quick_gelu True != False .*use backbone 'demo-tiny-quickgelu'"):
        load_backbone_weights(build_vit(TINY), str(tmp_path), "demo-tiny")
    where = {"spec": str(path), "source": "file", "path": str(path), "found": True}
    assert any("quick_gelu True != False" in p for p in weights_problems(where, TINY))
    quick = vit_config("demo-tiny-quickgelu")
    assert weights_problems(where, quick) == []
    tower_q = open_clip_tower(quick)
    torch.save({"visual." + k: v for k, v in tower_q.state_dict().items()}, path)
    model = load_backbone_weights(build_vit(quick), str(path), "demo-tiny-quickgelu")
    images = random_images(2, 64)
    assert np.abs(np.asarray(model(images)) - torch_features(tower_q, images)).max() <= 1e-4


def test_unstated_settings_pass():
    assert settings_problems(SourceSettings(source="a bare state dict", patch_size=8, image_size=64), TINY) == []
