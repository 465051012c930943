"""`shortest_side_crop` is torchvision's `Resize(int)` + `CenterCrop`: same sizes, same offsets,
values within a small tolerance, in the Keras/TF graph and in the TorchScript export alike."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from guie_nb.export.torchscript import Preprocess
from guie_nb.model.preprocessing import center_crop_offset, resize_images, torchvision_resize_size

# (h, w): odd aspect ratios, both orientations, up- and down-sampling, the issue's 200x205
ODD_SIZES = [(200, 205), (205, 200), (63, 64), (65, 129), (17, 301), (301, 17), (99, 100), (333, 1000),
             (64, 64), (127, 65), (71, 83), (250, 97), (97, 251), (129, 64)]
# measured: at most 1.4e-3 (on 0..255) between TF's antialiased bicubic and torchvision's
VALUE_TOL = 0.01


def _torchvision(img: np.ndarray, size: int) -> tuple[tuple[int, int], np.ndarray, tuple[int, int]]:
    """torchvision's resized size, its centre crop (float `[S, S, 3]`) and the crop's offset."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    resized = T.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)(x)
    crop = T.CenterCrop(size)(resized)
    # the offset: where the crop sits in the resized image (unique for random pixels)
    h, w = resized.shape[1:]
    offsets = [(t, l) for t in range(h - size + 1) for l in range(w - size + 1)
               if torch.equal(resized[:, t:t + size, l:l + size], crop)]
    assert len(offsets) == 1
    return (h, w), np.clip(crop.permute(1, 2, 0).numpy(), 0, 255), offsets[0]


def test_issue_example_200x205():
    """The issue's input: 224x229 cropped from x=2, as torchvision (was 224x230 from x=3)."""
    new_h, new_w = torchvision_resize_size(200, 205, 224)
    assert (new_h, new_w) == (224, 229)
    assert (center_crop_offset(new_h, 224), center_crop_offset(new_w, 224)) == (0, 2)


@pytest.mark.parametrize("h,w", ODD_SIZES)
def test_sizes_offsets_and_values_match_torchvision(h, w):
    size = 224 if (h, w) in [(200, 205), (205, 200)] else 64
    img = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    tv_size, tv_crop, tv_offset = _torchvision(img, size)
    new_h, new_w = torchvision_resize_size(h, w, size)
    assert (new_h, new_w) == tv_size
    assert (center_crop_offset(new_h, size), center_crop_offset(new_w, size)) == tv_offset
    # the TF graph (training, SavedModel export): batched and traced, so the graph path is tested
    graph = tf.function(lambda x: resize_images(x, size, "shortest_side_crop"),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    ours = graph(tf.constant(img[None]))[0].numpy()
    np.testing.assert_allclose(ours, tv_crop, atol=VALUE_TOL)
    # the TorchScript export's preprocessing (normalisation undone)
    pre = torch.jit.script(Preprocess(size, "shortest_side_crop"))
    with torch.no_grad():
        out = pre(torch.from_numpy(img).permute(2, 0, 1)[None]) * pre.std + pre.mean
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), tv_crop, atol=VALUE_TOL)


@pytest.mark.parametrize("d", range(0, 12))
def test_center_crop_offset_rounds_half_to_even(d):
    assert center_crop_offset(224 + d, 224) == int(round(d / 2.0))
