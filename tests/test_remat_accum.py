"""Memory savers that must not change the math: per-block rematerialisation gives the same
gradients with less temporary memory; gradient accumulation gives the same update as one big batch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

from guie_nb.model.backbones import VitConfig, vit_config
from guie_nb.model.embedding import ModelConfig
from guie_nb.model.vit import build_vit
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import build_step, put_batches

NUM_CLASSES = 10


def _vit_grad(cfg: VitConfig, remat: bool, batch: int):
    """(grad function, trainable values, images, variable paths) for a sum-of-squares loss."""
    keras.utils.set_random_seed(0)
    model = build_vit(cfg, remat=remat)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = np.random.RandomState(1).normal(size=(batch, cfg.image_size, cfg.image_size, 3)).astype("float32")

    def loss(tv, x):
        y, _ = model.stateless_call(tv, non_trainable, x, training=True)
        return jnp.sum(y * y)

    return jax.grad(loss), trainable, x, [v.path for v in model.weights]


def test_remat_keeps_paths_and_gradients():
    cfg = vit_config("demo-tiny")
    grad_plain, tv, x, paths_plain = _vit_grad(cfg, remat=False, batch=4)
    grad_remat, tv_r, _, paths_remat = _vit_grad(cfg, remat=True, batch=4)
    assert paths_remat == paths_plain  # checkpoints, converters and sharding key on these
    for a, b in zip(tv, tv_r):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # each block's forward is recomputed (a `remat` equation in the backward pass), only with remat
    assert len(re.findall(r"\bremat\w*\[", str(jax.make_jaxpr(grad_remat)(tv, x)))) == cfg.layers
    assert not re.findall(r"\bremat\w*\[", str(jax.make_jaxpr(grad_plain)(tv, x)))
    for g, h in zip(jax.jit(grad_plain)(tv, x), jax.jit(grad_remat)(tv, x)):
        np.testing.assert_allclose(np.asarray(h), np.asarray(g), rtol=1e-4, atol=1e-5)


def test_remat_keeps_only_block_inputs_for_the_backward_pass():
    """What the forward pass leaves for the backward pass: the residuals `jax.vjp` closes over.

    (XLA's CPU memory_analysis was tried first: its temp bytes did not go down with
    `jax.checkpoint` even for a plain MLP stack, so it cannot show the saving on CPU.)
    """
    cfg = VitConfig(image_size=64, patch_size=8, width=128, layers=8, heads=4, output_dim=64)
    batch, tokens = 8, cfg.grid_size**2 + 1
    saved = {}
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = build_vit(cfg, remat=remat)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        x = np.zeros((batch, cfg.image_size, cfg.image_size, 3), "float32")

        def loss(tv):
            y, _ = model.stateless_call(tv, non_trainable, x, training=True)
            return jnp.sum(y * y)

        _, backward = jax.vjp(loss, trainable)
        weights = {id(a) for a in trainable}
        saved[remat] = sum(a.nbytes for a in jax.tree.leaves(backward) if id(a) not in weights)
    block_inputs = cfg.layers * batch * tokens * cfg.width * 4  # float32 [B, L, width] per block
    # with remat: each block's input (what memory_plan counts) plus the stem's few tensors
    assert block_inputs <= saved[True] < 2 * block_inputs, saved
    assert saved[True] < 0.1 * saved[False], saved


def _step_setup(grad_accum_steps: int, steps: int = 2, batch: int = 16):
    """A TrainStep on demo-tiny (dropout 0, Nesterov SGD) with fixed initial weights and data:
    `(step, state, batches)`, placed as train() places them."""
    model_cfg = ModelConfig(backbone="demo-tiny", dropout=0.0,
                            head={"kind": "arcface", "scale": 16.0, "margin": 0.1})
    cfg = TrainConfig(batch_size=batch, grad_accum_steps=grad_accum_steps, optimizer="sgd", learning_rate=0.1,
                      warmup_epochs=0.0, weight_decay=1e-3, steps_per_execution=steps, label_smoothing=0.1)
    keras.utils.set_random_seed(0)  # the same initial weights for every k
    setup = build_step(model_cfg, cfg, NUM_CLASSES, steps=10)
    rng = np.random.default_rng(0)
    s = model_cfg.input_size
    labels = rng.integers(0, NUM_CLASSES, (steps, batch)).astype("int32")
    batches = ({"image": rng.uniform(0, 255, (steps, batch, s, s, 3)).astype("float32"), "label": labels}, labels)
    return setup.step, setup.initial_state(), put_batches(batches, setup.distribution)


@pytest.fixture(scope="module")
def big_batch_result():
    """Initial weights, then state and (losses, accuracies) after two plain steps of 16."""
    step, state, batches = _step_setup(1)
    initial = [np.asarray(p) for p in state.params]  # the step donates its state
    return initial, *step(state, batches)


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_step_equals_one_big_batch(k, big_batch_result):
    initial, big, (big_loss, big_acc) = big_batch_result
    step_k, state_k, batches_k = _step_setup(k)
    acc, (acc_loss, acc_acc) = step_k(state_k, batches_k)
    assert step_k.compilations == 1
    np.testing.assert_allclose(np.asarray(acc_loss), np.asarray(big_loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc_acc), np.asarray(big_acc), atol=1e-6)
    moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(big.params, initial))
    assert moved > 1e-3  # the two steps really changed the weights
    for a, b in zip(acc.params, big.params):  # weights after two updates
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    momenta = [optax.tree_utils.tree_get(s.opt_state, "trace") for s in (acc, big)]
    assert len(jax.tree.leaves(momenta[0])) == len(big.params)
    for a, b in zip(*(jax.tree.leaves(m) for m in momenta)):  # momenta
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_accumulation_settings_are_checked():
    with pytest.raises(ValueError, match=r"grad_accum_steps \(3\).*batch_size \(16\)"):
        TrainConfig(batch_size=16, grad_accum_steps=3)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)
    base = TrainConfig()
    assert TrainConfig(remat=True).fingerprint() == base.fingerprint()  # same math
    assert TrainConfig(grad_accum_steps=2).fingerprint() != base.fingerprint()  # another RNG stream
    assert "grad_accum_steps" not in base.fingerprint()  # older checkpoints still resume


EIGHT_DEVICES = textwrap.dedent(
    """
    import json, re
    import guie_nb
    import jax, numpy as np
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import distribution_for
    import test_remat_accum as t

    assert len(jax.devices()) == 8
    try:
        distribution_for(TrainConfig(batch_size=16, grad_accum_steps=4))
        error = None
    except ValueError as e:
        error = str(e)
    collectives, results = {}, {}
    for k in (1, 2):
        step, state, batches = t._step_setup(k, steps=1, batch=32)
        hlo = step.lower(state, batches).compile().as_text()
        ops = r" (all-to-all|collective-permute|all-gather|all-reduce)(?:-start)?\\("
        collectives[k] = sorted(re.findall(ops, hlo))
        results[k], _ = step(state, batches)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(results[2].params, results[1].params))
    print("RESULT" + json.dumps({"error": error, "diff": diff, "collectives": collectives}))
    """
)


@pytest.mark.slow
def test_accumulation_on_eight_devices():
    here = Path(__file__).parent
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "KERAS_BACKEND": "jax",
           "JAX_PLATFORMS": "cpu"}  # the 8 emulated devices, even where an accelerator is present
    env["PYTHONPATH"] = os.pathsep.join([str(here.parent / "src"), str(here)]
                                        + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    assert result["error"] and "micro-batch (16 / grad_accum_steps 4 = 4)" in result["error"]
    assert "8 data-parallel replicas" in result["error"]
    assert result["diff"] < 1e-5, result
    # micro-batches come from each device's own rows: no data moves between devices for them,
    # and the gradients are still reduced across devices once per step, as without accumulation
    assert "all-reduce" in result["collectives"]["1"]  # the HLO scan finds collectives at all
    assert result["collectives"]["2"] == result["collectives"]["1"], result["collectives"]


@pytest.mark.slow
def test_train_applies_remat_and_accumulation(tmp_path, monkeypatch):
    """The real train(): remat + 2 micro-batches end where plain training ends, and say so."""
    import json

    sys.path.insert(0, str(Path(__file__).parent))
    from _training_helpers import make_small_data

    from guie_nb.training import checkpoint, trainer
    from guie_nb.training.trainer import train

    used = []  # what train() really built: (remat of the embedding model, k of the step)
    real_build, real_step = trainer.build_embedding_model, trainer.TrainStep
    monkeypatch.setattr(trainer, "build_embedding_model",
                        lambda cfg, remat=False: used.append(remat) or real_build(cfg, remat=remat))
    monkeypatch.setattr(trainer, "TrainStep",
                        lambda *a, **kw: used.append(kw["grad_accum_steps"]) or real_step(*a, **kw))

    data_dir = make_small_data(tmp_path / "data")
    model_cfg = ModelConfig(dropout=0.0, head={"kind": "cosface", "scale": 16.0, "margin": 0.1})
    runs = {}
    for name, extra in {"plain": {}, "saving": {"remat": True, "grad_accum_steps": 2}}.items():
        cfg = TrainConfig(epochs=1, batch_size=16, steps_per_epoch=2, optimizer="sgd", learning_rate=0.05,
                          warmup_epochs=0.0, **extra)
        metrics = train(data_dir, tmp_path / name, model_cfg, cfg)
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (saved["remat"], saved["grad_accum_steps"]) == (cfg.remat, cfg.grad_accum_steps)
        assert metrics["train_step_compilations"] == 1
        runs[name] = checkpoint.load(checkpoint.list_checkpoints(tmp_path / name)[-1])
    assert used == [False, 1, True, 2]
    (plain, plain_meta), (saving, saving_meta) = runs["plain"], runs["saving"]
    variables = ("params", "frozen", "non_trainable")  # every model variable
    for a, b in zip(jax.tree.leaves([saving[k] for k in variables]), jax.tree.leaves([plain[k] for k in variables])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert saving_meta["history"][0]["loss"] == pytest.approx(plain_meta["history"][0]["loss"], rel=1e-5)
