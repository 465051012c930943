"""The training loop's parts: config checks, parameter groups, optimizer, checkpoints, data stream."""

from __future__ import annotations

import numpy as np
import pytest

from guie_nb.training import checkpoint, param_groups
from guie_nb.training.config import TrainConfig
from guie_nb.training.optim import make_optimizer, schedule_for, warmup_cosine


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
    p = param_groups.plan(PATHS, cfg, num_blocks=2)
    assert p.groups == ["stem", "stem", "block_0", "block_1", "top", "top", "neck", "neck", "head"]
    assert p.trained == [False, False, False, True, True, True, True, True, True]
    # depth: stem 0, block i -> i + 1, top 3; multiplier 0.1 * 0.5 ** (3 - depth)
    np.testing.assert_allclose(p.multipliers, [0.1 * 0.125, 0.1 * 0.125, 0.1 * 0.25, 0.1 * 0.5, 0.1, 0.1, 1, 1, 1])
    assert p.decay == [True, False, True, False, False, True, True, False, False]
    groups, multipliers, decay = p.of_trained()  # what the optimizer gets: trained variables only
    assert groups == ["block_1", "top", "top", "neck", "neck", "head"] and decay == p.decay[3:]
    assert multipliers == pytest.approx({"block_1": 0.05, "top": 0.1, "neck": 1.0, "head": 1.0})
    assert param_groups.plan(PATHS, TrainConfig(freeze_head=True), num_blocks=2).trained == [True] * 8 + [False]
    assert param_groups.plan(PATHS, TrainConfig(freeze_backbone=True), 2).trained == [False] * 6 + [True] * 3
    with pytest.raises(ValueError, match="every variable is frozen"):
        param_groups.plan(PATHS[:6] + PATHS[8:], TrainConfig(freeze_backbone=True, freeze_head=True), 2)


def test_every_variable_of_the_model_has_a_group_and_an_unknown_one_raises():
    from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model
    from guie_nb.model.param_groups import group_of

    cfg = ModelConfig(backbone="demo-tiny", hidden_dim=32)
    model = build_training_model(build_embedding_model(cfg), 5, cfg.head)
    names = {group_of(v.path, cfg.vit.layers).name for v in model.trainable_variables}
    assert names == {"stem", "top", "neck", "head"} | {f"block_{i}" for i in range(cfg.vit.layers)}
    branched = ModelConfig(backbone="demo-tiny", hidden_dim=8, neck_branches=3)  # hidden_<i>, projection_<i>
    neck = [v.path for v in build_embedding_model(branched).trainable_variables
            if v.path.startswith(("hidden", "projection"))]
    assert len(neck) == 12 and {group_of(p, 4).name for p in neck} == {"neck"}
    with pytest.raises(ValueError, match=r"'adapter/kernel' belongs to no parameter group.*guie_nb.model.param_groups"):
        group_of("adapter/kernel", 4)
    with pytest.raises(ValueError, match="block 4, but the backbone has 4 blocks"):
        group_of("resblocks_4/c_fc/kernel", 4)


def test_warmup_then_cosine():
    lrs = [float(warmup_cosine(s, 1.0, 10, 2, 0.1)) for s in range(11)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[10] == pytest.approx(0.1)
    run = schedule_for(TrainConfig(epochs=2, learning_rate=1.0, warmup_epochs=1.0, end_learning_rate_ratio=0.1), 5)
    assert [float(run(s)) for s in range(11)] == pytest.approx([float(warmup_cosine(s, 1.0, 10, 5, 0.1))
                                                                 for s in range(11)])


def test_adamw_matches_keras_and_multipliers_scale_the_step():
    import keras
    import optax

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]
    tx = make_optimizer("adamw", lambda s: 0.01, ["g"], {"g": 1.0}, [True], weight_decay=0.1, eps=1e-7)
    ref = keras.optimizers.AdamW(0.01, weight_decay=0.1, epsilon=1e-7)
    var = keras.Variable(p0)
    params, state = [p0], tx.init([p0])
    for g in grads:
        updates, state = tx.update([g], state, params)
        params = optax.apply_updates(params, updates)
        ref.apply([g], [var])
    np.testing.assert_allclose(np.asarray(params[0]), var.numpy(), atol=1e-4)
    half = make_optimizer("sgd", lambda s: 0.1, ["g"], {"g": 0.5}, [False], momentum=0.0)
    updates, _ = half.update([grads[0]], half.init([p0]), [p0])
    np.testing.assert_allclose(np.asarray(optax.apply_updates([p0], updates)[0]), p0 - 0.05 * grads[0], atol=1e-6)


def test_checkpoints_prune_and_resume_the_newest(tmp_path):
    import jax.numpy as jnp

    with checkpoint.Checkpoints(tmp_path, keep=2) as ckpts:
        for step in (2, 4, 6):
            ckpts.save(step, {"w": [jnp.full(3, step, jnp.float32)]}, {"note": step})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt_000000004", "ckpt_000000006"]
    arrays, meta = checkpoint.load(checkpoint.list_checkpoints(tmp_path)[-1])
    assert meta == {"note": 6, "step": 6} and arrays["w"][0].tolist() == [6, 6, 6]
    # a save cut off mid-write (Orbax's temporary folder, never renamed) is neither listed nor restored
    (checkpoint.checkpoint_dir(tmp_path) / "ckpt_000000008.orbax-checkpoint-tmp-1234567").mkdir()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)][-1] == "ckpt_000000006"
    with checkpoint.Checkpoints(tmp_path, keep=2) as ckpts:
        assert ckpts.latest_step() == 6
        state, meta = ckpts.restore({"w": [jnp.zeros(3, jnp.float32)]})
    assert meta["step"] == 6 and np.asarray(state["w"][0]).tolist() == [6, 6, 6]
