"""The scoring-time estimate: tokens and inference FLOPs from `guie_nb.model.flops` (honouring an
overlapping patch stride), x 205,000 test images / the assumed scorer throughput, against the 9 h limit."""

from __future__ import annotations

import pytest

from guie_nb import presets
from guie_nb.model.embedding import ModelConfig
from guie_nb.model.flops import flops_per_image, num_tokens, patch_grid
from guie_nb.preflight import ASSUMED_SCORER_FLOPS, SCORER_IMAGES, scoring_estimate


def test_overlapping_patches_count_their_tokens():
    assert patch_grid(224, 14) == 16 and patch_grid(280, 14) == 20
    assert patch_grid(290, 14, 12) == 24  # (290 - 14) // 12 + 1: the 1st place's last resolution
    h224, h290 = ModelConfig(backbone="ViT-H-14"), ModelConfig(backbone="ViT-H-14", image_size=290, patch_stride=12)
    assert num_tokens(h224) == 257 and num_tokens(h290) == 577
    assert num_tokens(h290) / num_tokens(h224) == pytest.approx(2.245, abs=1e-3)  # "about 2.3x"
    for bad in (0, -2):
        with pytest.raises(ValueError, match="no patch grid|stride"):
            patch_grid(290, 14, bad)


def test_vit_h_flops_by_hand():
    """ViT-H-14 at 224: 257 tokens, width 1280, MLP 5120, 32 blocks, projection to 1024; then the
    neck (1024 -> 64) that the exported model also runs."""
    s, w, m = 257, 1280, 5120
    by_hand = 2 * 256 * 14 * 14 * 3 * w + 32 * (2 * s * (4 * w * w + 2 * w * m) + 4 * s * s * w) + 2 * w * 1024
    f = flops_per_image(ModelConfig(backbone="ViT-H-14"), backward=False)
    assert f.parts["stem"] + f.parts["blocks"] + f.parts["top"] == by_hand
    assert f.forward == by_hand + 2 * 1024 * 64
    assert scoring_estimate({"backbone": "ViT-H-14"})["flops_per_image"] == by_hand + 2 * 1024 * 64
    stride14 = flops_per_image(ModelConfig(backbone="ViT-H-14", patch_stride=14), backward=False)
    assert stride14.forward == f.forward  # a stride equal to the patch size is the default


def test_scoring_estimate_against_the_limit():
    stride12 = scoring_estimate({"backbone": "ViT-H-14", "image_size": 290, "patch_stride": 12})
    assert stride12["tokens"] == 577 and stride12["patch_stride"] == 12
    assert stride12["hours"] == pytest.approx(stride12["flops_per_image"] * SCORER_IMAGES / ASSUMED_SCORER_FLOPS / 3600)
    assert stride12["fits"] and 8.5 < stride12["hours"] <= 9.0
    flipped = scoring_estimate({"backbone": "ViT-H-14", "image_size": 290, "patch_stride": 12}, flip_tta=True)
    assert flipped["hours"] == pytest.approx(2 * stride12["hours"]) and not flipped["fits"]
    assert scoring_estimate({"backbone": "ViT-H-14", "flip_tta": True})["flip_tta"]  # the model's own TTA counts


@pytest.mark.parametrize("name, size, stride, flip", [("first_place", 290, 12, False), ("second_place", 224, 14, True),
                                                      ("third_place", 224, 14, False), ("seed_recipe", 224, 14, False)])
def test_each_preset_is_estimated_at_its_final_resolution(name, size, stride, flip):
    est = scoring_estimate(*presets.final_model(name))
    assert (est["image_size"], est["patch_stride"], est["flip_tta"]) == (size, stride, flip)
    assert est["fits"], est
