"""Training on cached embeddings resumes as the on-the-fly trainer does (tests/test_resume.py): a
run killed (SIGKILL) right after an epoch-end checkpoint was started, rerun into the same folder,
continues from the newest complete checkpoint and ends with an uninterrupted run's state; a rerun
of another configuration is refused. Tiny: demo-tiny features of the small demo data, 4 epochs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402

# margins that change every epoch and dropout: both must come back right after a resume
MODEL = {"backbone": "demo-tiny", "dropout": 0.1, "hidden_dim": 32, "neck_batchnorm": True,
         "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1, "margin_schedule": "linear",
                  "margin_growth": 0.05}}
TRAIN = {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.02, "freeze_backbone": True,
         "cached_embeddings": True, "keep_checkpoints": 10}
KILL_AFTER_SAVES = 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("cached_resume"))


def _train(data_dir, out_dir, stop_after_steps: int | None = None, **kwargs) -> dict:
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    return train(data_dir, out_dir, ModelConfig.from_dict(MODEL), TrainConfig.from_dict({**TRAIN, **kwargs}),
                 stop_after_steps=stop_after_steps)


def _killed_worker(data_dir: str, out_dir: str) -> None:
    """Subprocess entry point: train, and SIGKILL this process as soon as the KILL_AFTER_SAVES-th
    checkpoint save has been started (Orbax may still be writing it in the background)."""
    from guie_nb.training import checkpoint

    save, calls = checkpoint.Checkpoints.save, []

    def save_then_die(self, step, state, meta):
        path = save(self, step, state, meta)
        calls.append(step)
        if len(calls) == KILL_AFTER_SAVES:
            print(f"killing myself after starting the save of step {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    checkpoint.Checkpoints.save = save_then_die
    _train(data_dir, out_dir)


def test_killed_cached_run_resumes_to_the_same_weights(data_dir, tmp_path):
    from guie_nb.training import checkpoint

    straight = _train(data_dir, tmp_path / "straight")
    steps = straight["steps_per_epoch"]
    assert straight["step"] == 4 * steps and straight["resumed_from_step"] == 0
    # a checkpoint after every epoch, each with the trainer's metadata (RunLog + fingerprint)
    kept = checkpoint.list_checkpoints(tmp_path / "straight")
    assert [checkpoint.read_meta(p)["step"] for p in kept] == [steps, 2 * steps, 3 * steps, 4 * steps]
    assert {"fingerprint", "history", "initial", "partial", "step"} <= set(checkpoint.read_meta(kept[-1]))

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import guie_nb; "
            f"from test_cached_resume import _killed_worker; _killed_worker({str(data_dir)!r}, "
            f"{str(tmp_path / 'killed')!r})")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, (proc.stdout + proc.stderr)[-3000:]
    assert f"killing myself after starting the save of step {KILL_AFTER_SAVES * steps}" in proc.stdout
    assert not (tmp_path / "killed" / "metrics.json").exists()
    # atomic: only complete checkpoints are listed (the second may have been cut off mid-write)
    done = [checkpoint.read_meta(p)["step"] for p in checkpoint.list_checkpoints(tmp_path / "killed")]
    assert done and done[-1] in (steps, 2 * steps), done
    killed_at = done[-1]

    resumed = _train(data_dir, tmp_path / "killed")
    assert resumed["resumed_from_step"] == killed_at and resumed["step"] == straight["step"]
    assert resumed["backbone_forward_passes_this_run"] == 0  # the cache was complete before the kill
    a, meta_a = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "straight")[-1])
    b, meta_b = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "killed")[-1])
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert {"params", "frozen", "non_trainable", "opt_state", "step"} == set(a) and len(jax.tree.leaves(a)) > 10
    # every array: neck + head weights, BN statistics, dropout RNG state, margins, AdamW moments, counters
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    first, _ = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "straight")[0])
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a["params"]),
                                                               jax.tree.leaves(first["params"])))
    assert moved > 1e-3, moved  # epochs 2-4 moved the weights far beyond the tolerance
    assert [r["loss"] for r in meta_a["history"]] == pytest.approx([r["loss"] for r in meta_b["history"]], rel=1e-5)
    assert resumed["final"] == pytest.approx(straight["final"])
    history = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4  # header + every epoch, those before the kill included
    for name in ("embedding.weights.h5", "training_model.weights.h5", "model_config.json"):
        assert (tmp_path / "killed" / name).is_file()


def test_stop_and_resume_and_refuse_another_configuration(data_dir, tmp_path):
    from guie_nb.training import checkpoint

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="multiple of its"):
        _train(data_dir, out, stop_after_steps=3)
    stopped = _train(data_dir, out, epochs=2, stop_after_steps=10)
    assert stopped["step"] == 10 and not (out / "metrics.json").exists()
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt_000000010"]
    with pytest.raises(ValueError, match="another configuration"):
        _train(data_dir, out, epochs=2, learning_rate=1e-2)
    done = _train(data_dir, out, epochs=2)
    assert done["resumed_from_step"] == 10 and done["step"] == 20
    assert json.loads((out / "metrics.json").read_text())["step"] == 20


def test_feature_cache_share_is_checked(tmp_path):
    from guie_nb.training.feature_cache import build_feature_cache

    args = (tmp_path, {}, lambda x: x, [], {"queries": [], "index": []}, 32, "resize", 16)
    with pytest.raises(ValueError, match=r"must be in 0\.\.1"):
        build_feature_cache(*args, share=(2, 2), barrier=lambda name: None)
    with pytest.raises(ValueError, match="need a barrier"):
        build_feature_cache(*args, share=(1, 2))
    assert not (tmp_path / "manifest.json").exists()
