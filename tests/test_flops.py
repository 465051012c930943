"""The analytic FLOP count (guie_nb.model.flops) against published figures and against XLA's own
count of the compiled, unscanned train step."""

from __future__ import annotations


import numpy as np
import pytest

from guie_nb.model.embedding import ModelConfig
from guie_nb.model.flops import (flops_per_image, hlo_matmul_flops, num_tokens, patch_grid, peak_bf16_flops,
                                 train_flops_per_image)
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import build_step

# open_clip's docs/model_profile.csv, column image_gflops (the visual tower's forward, 224 px unless named)
OPEN_CLIP_IMAGE_GFLOPS = {"ViT-B-32": 8.82, "ViT-B-16": 35.13, "ViT-L-14": 162.03, "ViT-L-14-336": 381.92,
                          "ViT-H-14": 334.59, "ViT-g-14": 534.06}


@pytest.mark.parametrize("backbone", sorted(OPEN_CLIP_IMAGE_GFLOPS))
def test_forward_matches_open_clip_profile(backbone):
    f = flops_per_image(ModelConfig(backbone=backbone), backward=False)
    tower = f.parts["stem"] + f.parts["blocks"] + f.parts["top"]
    assert tower / 1e9 == pytest.approx(OPEN_CLIP_IMAGE_GFLOPS[backbone], rel=5e-4)
    assert f.backward == f.remat == 0


def test_fully_trained_blocks_follow_palm_formula():
    """PaLM appendix B: 6N per token for the weights + 12·layers·width·T per token for attention."""
    cfg = ModelConfig(backbone="ViT-B-16")
    vit, t = cfg.vit, num_tokens(cfg)
    block_weights = vit.layers * (4 * vit.width**2 + 2 * vit.width * vit.mlp_width)
    f = flops_per_image(cfg, 1000)
    fwd_blocks = f.parts["blocks"]
    assert 3 * fwd_blocks == 6 * block_weights * t + 12 * vit.layers * vit.width * t * t
    # everything trains: 2x forward backward, except the patch embedding (the pixels need no gradient)
    assert f.backward == 2 * f.forward - f.parts["stem"]


def test_frozen_parts_and_remat():
    cfg = ModelConfig(backbone="ViT-H-14")
    full = flops_per_image(cfg, 1000)
    frozen = flops_per_image(cfg, 1000, freeze_backbone=True)
    assert frozen.forward == full.forward
    head, neck = frozen.parts["head"], frozen.parts["neck"]
    assert frozen.backward == 2 * head + neck  # neck: weight gradient only; its input needs none
    half = flops_per_image(cfg, 1000, frozen_blocks=16)
    assert frozen.backward < half.backward < full.backward
    no_head = flops_per_image(cfg, 1000, freeze_head=True)
    assert full.backward - no_head.backward == head  # no centre gradient, the embedding's still flows
    remat = flops_per_image(cfg, 1000, remat=True)
    assert remat.model == full.model and 0.25 < remat.remat / full.forward < 1  # ~1/3 more than the forward
    assert flops_per_image(cfg, 1000, freeze_backbone=True, remat=True).remat == 0  # nothing to recompute


def test_token_count_reads_patch_stride():
    assert patch_grid(224, 14) == 16
    assert patch_grid(224, 16, 12) == 18  # (224 - 16) // 12 + 1: overlapping patches
    base = ModelConfig(backbone="ViT-B-16")
    assert num_tokens(base) == 197
    overlapping = ModelConfig(backbone="ViT-B-16", image_size=220, patch_stride=12, neck_branches=3)
    assert num_tokens(overlapping) == 18 * 18 + 1  # (220 - 16) // 12 + 1 = 18 per side
    more = flops_per_image(overlapping, 100)
    assert more.forward > flops_per_image(base, 100).forward
    assert more.parts["neck"] == 3 * flops_per_image(base, 100).parts["neck"]
    with pytest.raises(ValueError, match="no patch grid"):
        patch_grid(10, 14)


def test_peak_table():
    assert peak_bf16_flops("TPU v5 lite") == 197e12
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("cpu") is None


def _compiled_step(model_cfg: ModelConfig, train_cfg: TrainConfig, classes: int):
    setup = build_step(model_cfg, train_cfg, classes, steps=10)
    state = setup.initial_state()
    b, s = train_cfg.batch_size, model_cfg.input_size
    labels = np.zeros((1, b), "int32")  # one step: unscanned
    batches = ({"image": np.zeros((1, b, s, s, 3), "float32"), "label": labels}, labels)
    return setup.step.lower(state, batches).compile()


# demo-tiny (width 96, 4 blocks): each config compiles one train step on the CPU in a few seconds
CONFIGS = [
    ({"image_size": 32}, {}),
    ({"image_size": 32, "hidden_dim": 128, "head": {"subcenters": 3}}, {"frozen_blocks": 2}),
    ({"image_size": 32}, {"freeze_head": True, "remat": True}),
    ({"image_size": 32}, {"freeze_backbone": True}),
]


@pytest.mark.parametrize("model_kw,train_kw", CONFIGS)
def test_analytic_count_agrees_with_xla(model_kw, train_kw):
    """XLA's products (dots, convolutions) equal the analytic count exactly; XLA's whole count also
    has one FLOP per value of every elementwise op and reduction (layer norms, softmax, erf-GELU,
    dropout, the margin and the loss, the optimizer update), 5-15% more at this tiny width (96;
    a smaller share at real widths, where products grow with width squared: 1.7% for ViT-B-16 in
    `benchmarks/train_step.py`)."""
    model_cfg, classes = ModelConfig(backbone="demo-tiny", **model_kw), 50
    train_cfg = TrainConfig(batch_size=8, **train_kw)
    compiled = _compiled_step(model_cfg, train_cfg, classes)
    analytic = train_flops_per_image(model_cfg, train_cfg, classes).hardware
    assert hlo_matmul_flops(compiled.as_text()) / 8 == pytest.approx(analytic, rel=1e-6)
    cost = compiled.cost_analysis()
    xla = float((cost[0] if isinstance(cost, list) else cost)["flops"]) / 8
    assert 1.0 < xla / analytic < 1.15, (xla, analytic)


def test_every_concatenated_tower_is_counted():
    """extra_backbones run on every image (4th place: ViT-H-14 + ViT-L-14-336 at one input size):
    each tower's products count, trained or frozen alike, and the neck reads their joined features."""
    one, two = ModelConfig(backbone="ViT-B-32"), ModelConfig(backbone="ViT-B-32", extra_backbones=["ViT-B-32"])
    f1, f2 = flops_per_image(one, 100), flops_per_image(two, 100)
    for part in ("stem", "blocks", "top"):
        assert f2.parts[part] == 2 * f1.parts[part]
    assert f2.parts["neck"] == 2 * f1.parts["neck"]  # 1024 joined features -> 64, not 512 -> 64
    assert f2.backward - f2.parts["head"] * 2 == pytest.approx(2 * (f1.backward - f1.parts["head"] * 2))
    frozen = flops_per_image(two, 100, freeze_backbone=True, remat=True)
    assert frozen.backward == 2 * frozen.parts["head"] + frozen.parts["neck"] and frozen.remat == 0
    assert flops_per_image(two, 100, remat=True).remat == 2 * flops_per_image(one, 100, remat=True).remat
