"""The winners' model mechanisms (issue 12), each against an independent computation:

- overlapping patch embedding (1st place, patch 14 at stride 12): open_clip's own tower with the
  same conv stride and the same resampled position embeddings; a stride-14 run carried into it;
- a neck of N parallel Dropout -> Dense branches averaged (3rd place): the mean computed by hand;
- [h, w, aspect] of the raw image (5th place): the formula by hand, both exports, data-prep's
  records and the training pipeline;
- flip TTA inside the model (2nd place): the mean of the image's and its mirror's embeddings.
The SavedModel side runs in a TensorFlow-backend subprocess; tests/test_export.py runs the
combined model in the scorer runtimes.
"""

from __future__ import annotations

import io
from dataclasses import replace

import keras
import numpy as np
import pytest
import torch

from _backbone_helpers import open_clip_tower, random_images, torch_features
from guie_nb.export.checks import keras_reference, probe_images
from guie_nb.export.torchscript import build_torch_module
from guie_nb.model.backbones import vit_config
from guie_nb.model.convert import open_clip_to_keras
from guie_nb.model.embedding import (ModelConfig, build_embedding_model, build_training_model, embedding_inputs,
                                     size_features)
from guie_nb.model.posemb import resample_pos_embed
from guie_nb.model.vit import build_vit

TOL = 1e-4


def _torch_embed(module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.jit.script(module)(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()[0]


def _neck_free(model) -> dict[str, np.ndarray]:
    """Non-backbone weights by path (the backbone's live under `visual`)."""
    visual = {id(v) for v in model.get_layer("visual").weights}
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights if id(v) not in visual}


# ---- 1. overlapping patches ------------------------------------------------------------------

def test_overlapping_patches_match_open_clip_with_the_same_conv_stride():
    native = vit_config("demo-tiny")  # 64 px, patch 8: an 8 x 8 grid
    tower = open_clip_tower(native)  # "pretrained" weights at the native grid
    cfg = vit_config("demo-tiny", image_size=62, patch_stride=6)  # (62 - 8) / 6 + 1 = 10 per side
    assert (cfg.grid_size, cfg.num_tokens) == (10, 101)
    keras_vit = open_clip_to_keras(tower, build_vit(cfg))  # loading resamples the 8 x 8 grid to 10 x 10
    assert keras_vit.get_layer("embeddings").positional_embedding.shape == (101, native.width)

    # open_clip with the same stride: conv1.stride set, positional_embedding resampled the same way
    tower.conv1.stride = (6, 6)
    pos = resample_pos_embed(tower.positional_embedding.detach().numpy(), 10)
    tower.positional_embedding = torch.nn.Parameter(torch.from_numpy(pos))
    images = random_images(2, 62)
    expected = torch_features(tower, images)
    got = np.asarray(keras_vit(images))
    assert got.shape == expected.shape == (2, native.output_dim)
    assert np.abs(got - expected).max() <= TOL
    # the check can fail: the same weights with non-overlapping patches give other features
    plain = open_clip_to_keras(tower, build_vit(vit_config("demo-tiny", image_size=64)))
    assert np.abs(np.asarray(plain(random_images(2, 64))) - expected).max() > 100 * TOL


def test_patch_geometry_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"multiple of the stride, e.g. 62 or 68"):
        ModelConfig(backbone="demo-tiny", patch_stride=6)  # 64 px: (64 - 8) % 6 = 2
    with pytest.raises(ValueError, match=r"patch_stride must be in 1..patch_size \(8\)"):
        ModelConfig(backbone="demo-tiny", patch_stride=9)
    with pytest.raises(ValueError, match="multiple of patch_size 8"):
        ModelConfig(backbone="demo-tiny", image_size=70)
    assert ModelConfig(backbone="demo-tiny", patch_stride=8).vit.num_tokens == 65  # stride = patch: as before


def test_fine_tune_from_a_stride_14_run_into_an_overlapping_model(tmp_path):
    """transfer.load_training_weights: every weight carried, the position grid resampled."""
    from guie_nb.run_dir import TRAINING_WEIGHTS
    from guie_nb.training.transfer import load_training_weights

    old = ModelConfig(backbone="demo-tiny")
    source = build_training_model(build_embedding_model(old), 7, old.head)
    source.save_weights(tmp_path / TRAINING_WEIGHTS)
    old.save(tmp_path / "model_config.json")
    new = replace(old, image_size=62, patch_stride=6)
    target = build_training_model(build_embedding_model(new), 7, new.head)
    load_training_weights(target, tmp_path, 7)
    before = {v.path: keras.ops.convert_to_numpy(v) for v in source.weights}
    for v in target.weights:
        value = keras.ops.convert_to_numpy(v)
        if v.path.endswith("positional_embedding"):
            assert value.shape == (101, 96)
            np.testing.assert_allclose(value, resample_pos_embed(before[v.path], 10), atol=1e-6)
        else:
            np.testing.assert_array_equal(value, before[v.path], err_msg=v.path)


def test_token_counts_in_flops_and_memory_plan_honour_the_stride():
    """1st place's 290 px stage at stride 12: 24 x 24 patches, like 336 px at stride 14."""
    from guie_nb.model.flops import flops_per_image
    from guie_nb.model.memory_plan import plan_for
    from guie_nb.training.config import TrainConfig

    def forward(**kw):
        return flops_per_image(ModelConfig(backbone="ViT-H-14", **kw), backward=False).forward

    h224, h290 = vit_config("ViT-H-14"), vit_config("ViT-H-14", image_size=290, patch_stride=12)
    assert (h224.num_tokens, h290.num_tokens) == (257, 577)
    ratio = forward(image_size=290, patch_stride=12) / forward()
    assert 577 / 257 < ratio < (577 / 257) ** 2  # linear layers scale with tokens, attention faster
    assert forward(image_size=290, patch_stride=12) == pytest.approx(forward(image_size=336))
    train = TrainConfig(batch_size=64)
    overlap = plan_for(ModelConfig(backbone="ViT-H-14", image_size=290, patch_stride=12), train, 1000)
    same_grid = plan_for(ModelConfig(backbone="ViT-H-14", image_size=336), train, 1000)
    plain = plan_for(ModelConfig(backbone="ViT-H-14", image_size=224), train, 1000)
    assert overlap.breakdown["activations"] == same_grid.breakdown["activations"]
    assert overlap.breakdown["activations"] > 2 * plain.breakdown["activations"]


# ---- 2. multi-branch neck --------------------------------------------------------------------

def test_one_branch_keeps_todays_names_and_branches_average():
    one = build_embedding_model(ModelConfig(backbone="demo-tiny"))
    assert sorted(_neck_free(one)) == ["projection/bias", "projection/kernel"]

    cfg = ModelConfig(backbone="demo-tiny", neck_branches=3, hidden_dim=16, dropout=0.5)
    model = build_embedding_model(cfg)
    weights = _neck_free(model)
    assert sorted(weights) == sorted(f"{n}_{i}/{w}" for n in ("hidden", "projection") for i in range(3)
                                     for w in ("kernel", "bias"))
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = np.asarray(model.get_layer("visual")(model.get_layer("clip_normalize")(images)), np.float64)
    branches = [(features @ weights[f"hidden_{i}/kernel"] + weights[f"hidden_{i}/bias"])
                @ weights[f"projection_{i}/kernel"] + weights[f"projection_{i}/bias"] for i in range(3)]
    mean = np.mean(branches, axis=0)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, atol=1e-5)
    one_branch = branches[0] / np.linalg.norm(branches[0], axis=1, keepdims=True)
    assert np.abs(expected - one_branch).max() > 1e-2  # the average is not any one branch


def test_neck_branches_are_the_neck_parameter_group():
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.param_groups import group_of, plan

    cfg = ModelConfig(backbone="demo-tiny", neck_branches=4, hidden_dim=8)
    training = build_training_model(build_embedding_model(cfg), 5, cfg.head)
    paths = [v.path for v in training.trainable_variables]
    neck = [p for p in paths if p.startswith(("hidden", "projection"))]
    assert len(neck) == 16 and all(group_of(p, 4).part == "neck" for p in neck)
    groups = plan(paths, TrainConfig(freeze_backbone=True, backbone_lr_multiplier=0.1), 4)
    by_path = dict(zip(paths, zip(groups.trained, groups.multipliers)))
    assert all(by_path[p] == (True, 1.0) for p in neck)  # trained at the full rate
    assert not by_path["conv1/kernel"][0]


# ---- 3. size and aspect features -------------------------------------------------------------

def _size_only_model(**overrides):
    """A size_features model whose neck ignores the backbone: the embedding is a function of the
    raw image's size alone, so comparing embeddings compares the size features."""
    cfg = ModelConfig(backbone="demo-tiny", size_features=True, embedding_dim=8, dropout=0.0, **overrides)
    model = build_embedding_model(cfg)
    dense = model.get_layer("projection")
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    kernel[:-3] = 0.0
    dense.kernel.assign(kernel)
    return cfg, model, kernel[-3:], keras.ops.convert_to_numpy(dense.bias)


def test_size_features_formula():
    got = keras.ops.convert_to_numpy(size_features(np.array([500.0, 37.0, 0.0]), np.array([1000.0, 91.0, 4.0])))
    expected = [[0.0, np.log(2.0), np.log(2.0)], [np.log(37 / 500), np.log(91 / 500), np.log(91 / 37)],
                [np.log(1 / 500), np.log(4 / 500), np.log(4.0)]]  # a 0 side counts as 1 px
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_torchscript_size_features_equal_the_keras_models_for_non_square_raw_images():
    cfg, model, kernel, bias = _size_only_model()
    module = build_torch_module(model, cfg)
    reference = keras_reference(model, cfg)
    outs = {}
    for image in probe_images([(37, 91), (91, 37), (480, 640)]):
        h, w = image.shape[:2]
        logits = np.asarray([np.log(h / 500), np.log(w / 500), np.log(w / h)]) @ kernel + bias
        by_hand = logits / np.linalg.norm(logits)
        np.testing.assert_allclose(reference(image), by_hand, atol=1e-5)
        outs[(h, w)] = _torch_embed(module, image)
        np.testing.assert_allclose(outs[(h, w)], by_hand, atol=1e-5)
    assert np.abs(outs[(37, 91)] - outs[(91, 37)]).max() > 1e-2  # portrait and landscape differ


def test_records_carry_the_original_size_and_the_pipeline_delivers_it(tmp_path):
    """data-prep stores the upright source size before max_side; train and eval batches carry it;
    a record from before (no size) falls back to its stored image's size."""
    from PIL import Image

    from _data_helpers import photo
    from guie_nb.data.pipeline import eval_dataset, train_dataset
    from guie_nb.data.shard_writer import ImageSettings, Task, run_task
    from guie_nb.data.source_images import SourceImage
    from guie_nb.data.tfrecord_format import AtomicWriter, encode_example

    big = tmp_path / "big.jpg"
    photo(1, (300, 200)).save(big, "JPEG")  # width 300, height 200
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 300 x 200, shown turned by 90 degrees: 200 wide, 300 high
    photo(2, (300, 200)).save(rotated, "JPEG", exif=exif)
    small = tmp_path / "small.jpg"
    photo(3, (40, 30)).save(small, "JPEG")
    items = [(SourceImage(p, "c", p.stem, "src"), label) for label, p in enumerate((big, rotated, small))]
    run_task(Task("train-00000-of-00002.tfrec", "train", items, ImageSettings(max_side=64, quality=90),
                  str(tmp_path)))
    old = AtomicWriter(tmp_path / "train-00001-of-00002.tfrec")  # a shard written before sizes were kept
    buf = io.BytesIO()
    photo(4, (50, 20)).save(buf, "JPEG")
    old.write(encode_example({"image": buf.getvalue(), "label": 3, "source": b"src", "image_id": b"0" * 16}))
    old.commit()
    files = sorted(tmp_path.glob("train-*.tfrec"))
    expected = {0: (200, 300), 1: (300, 200), 2: (30, 40), 3: (20, 50)}  # (height, width)

    (batch, labels), = train_dataset(files, 32, 4, original_size=True).as_numpy_iterator()
    assert batch["image"].shape == (1, 4, 32, 32, 3)
    assert {int(label): tuple(size) for label, size in zip(labels[0], batch["original_size"][0])} == expected
    plain, _ = next(train_dataset(files, 32, 4).as_numpy_iterator())
    assert set(plain) == {"image", "label"}  # unchanged for every model without size features

    inputs, ids = next(iter(eval_dataset(files, 32, "squash", batch_size=4, original_size=True)))
    stored = {i.decode(): tuple(s) for i, s in zip(ids.numpy(), inputs["original_size"].numpy())}
    assert stored["0" * 16] == (20, 50) and sorted(stored.values()) == sorted(expected.values())


# ---- 4. flip TTA -----------------------------------------------------------------------------

def test_flip_tta_is_the_normalised_mean_of_image_and_mirror():
    plain_cfg = ModelConfig(backbone="demo-tiny", dropout=0.0, neck_branches=2, size_features=True)
    plain = build_embedding_model(plain_cfg)
    tta_cfg = replace(plain_cfg, flip_tta=True)
    tta = build_embedding_model(tta_cfg)
    tta.set_weights(plain.get_weights())  # TTA adds no weight
    images = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    sizes = np.array([[100, 300], [64, 64], [900, 40]], "float32")

    def embed(x):
        return np.asarray(plain.predict_on_batch(embedding_inputs(plain_cfg, x, sizes)), np.float64)

    total = embed(images) + embed(images[:, :, ::-1])
    expected = total / np.linalg.norm(total, axis=1, keepdims=True)
    got = tta.predict_on_batch(embedding_inputs(tta_cfg, images, sizes))
    assert got.shape == (3, 64)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(expected - embed(images)).max() > 1e-3  # the mirror does change the embedding
    # training runs the plain model (one pass; the pipeline flips at random already)
    trained = tta(embedding_inputs(tta_cfg, images, sizes), training=True)
    np.testing.assert_allclose(np.asarray(trained), embed(images), atol=1e-5)


def test_torchscript_reproduces_every_mechanism_together():
    cfg = ModelConfig(backbone="demo-tiny", image_size=62, patch_stride=6, neck_branches=3, hidden_dim=16,
                      size_features=True, flip_tta=True, resize_mode="shortest_side_crop", embedding_dim=48)
    model = build_embedding_model(cfg)
    module = build_torch_module(model, cfg)
    reference = keras_reference(model, cfg)
    for image in probe_images([(1, 1), (97, 301), (640, 33)]):
        out = _torch_embed(module, image)
        assert out.shape == (48,)
        np.testing.assert_allclose(out, reference(image), atol=2e-5)
