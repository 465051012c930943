"""The training loop's parts: config checks, parameter groups, optimizer, checkpoints, data stream."""

from __future__ import annotations

import numpy as np
import pytest

from guie_nb.training import checkpoint, param_groups
from guie_nb.training.config import TrainConfig
from guie_nb.training.optim import Optimizer, warmup_cosine


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="unknown training parameter"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=3, steps_per_execution=2)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="unknown layout"):
        TrainConfig(layout="pipeline")


PATHS = ["conv1/kernel", "embeddings/positional_embedding", "resblocks_0/attn/in_proj/kernel",
         "resblocks_1/ln_1/gamma", "ln_post/gamma", "proj/kernel", "projection/kernel", "projection/bias",
         "margin_head/centers"]


def test_layer_decay_backbone_multiplier_and_freezing():
    cfg = TrainConfig(layer_decay=0.5, backbone_lr_multiplier=0.1, frozen_blocks=1)
    trained, mults, decay = param_groups.plan(PATHS, cfg, num_blocks=2)
    assert trained == [False, False, False, True, True, True, True, True, True]
    # depth: stem 0, block i -> i + 1, top 3; multiplier 0.1 * 0.5 ** (3 - depth)
    np.testing.assert_allclose(mults, [0.1 * 0.125, 0.1 * 0.125, 0.1 * 0.25, 0.1 * 0.5, 0.1, 0.1, 1, 1, 1])
    assert decay == [True, False, True, False, False, True, True, False, False]
    trained, _, _ = param_groups.plan(PATHS, TrainConfig(freeze_head=True), num_blocks=2)
    assert trained == [True] * 8 + [False]
    trained, _, _ = param_groups.plan(PATHS, TrainConfig(freeze_backbone=True), num_blocks=2)
    assert trained == [False] * 6 + [True] * 3
    with pytest.raises(ValueError, match="every variable is frozen"):
        param_groups.plan(PATHS[:6] + PATHS[8:], TrainConfig(freeze_backbone=True, freeze_head=True), 2)


def test_warmup_then_cosine():
    lrs = [float(warmup_cosine(s, 1.0, 10, 2, 0.1)) for s in range(11)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[10] == pytest.approx(0.1)


def test_adamw_matches_keras_and_multipliers_scale_the_step():
    import keras

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]
    opt = Optimizer("adamw", 0.01, total_steps=100, warmup_steps=0, end_ratio=1.0, lr_multipliers=(1.0,),
                    decay_mask=(True,), weight_decay=0.1, eps=1e-7)
    ref = keras.optimizers.AdamW(0.01, weight_decay=0.1, epsilon=1e-7)
    var = keras.Variable(p0)
    params, state = [p0], opt.init([p0])
    for g in grads:
        params, state = opt.apply(state, [g], params)
        ref.apply([g], [var])
    np.testing.assert_allclose(np.asarray(params[0]), var.numpy(), atol=1e-4)
    half = Optimizer("sgd", 0.1, 100, 0, 1.0, (0.5,), (False,), momentum=0.0)
    new, _ = half.apply(half.init([p0]), [grads[0]], [p0])
    np.testing.assert_allclose(np.asarray(new[0]), p0 - 0.05 * grads[0], atol=1e-6)


def test_checkpoints_prune_and_resume_the_newest(tmp_path):
    for step in (2, 4, 6):
        checkpoint.save(tmp_path, step, {"w": [np.full(3, step)]}, {"note": step}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-000000004.npz", "ckpt-000000006.npz"]
    arrays, meta = checkpoint.latest(tmp_path)
    assert meta["step"] == 6 and arrays["w"][0].tolist() == [6, 6, 6]
    checkpoint.list_checkpoints(tmp_path)[-1].write_bytes(b"cut off")  # a torn write
    arrays, meta = checkpoint.latest(tmp_path)
    assert meta["step"] == 4
