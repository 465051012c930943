"""Kill a training run after a checkpoint, rerun it: it resumes and ends exactly where an
uninterrupted run ends (step count, weights, optimizer state, history). Also: one compilation of
the train step per run, the same data stream after a mid-epoch skip, and the non-finite stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from guie_nb.training import checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("resume"))


def _worker(data_dir, out_dir) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE / "_training_helpers.py"), str(data_dir), str(out_dir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_killed_run_resumes_to_the_same_weights(data_dir, tmp_path):
    _finish(_worker(data_dir, tmp_path / "straight"))

    proc = _worker(data_dir, tmp_path / "killed")
    deadline = time.time() + 600
    while not checkpoint.list_checkpoints(tmp_path / "killed"):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run finished before it was killed"
    killed_at = checkpoint.read_meta(checkpoint.list_checkpoints(tmp_path / "killed")[-1])["step"]
    assert 0 < killed_at < 12

    out = _finish(_worker(data_dir, tmp_path / "killed"))
    assert f"resuming from step {killed_at} of 12" in out

    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert straight["step"] == resumed["step"] == 12
    assert resumed["resumed_from_step"] == killed_at
    # one compiled train step per run, the resumed run included (2 epochs, margin changes between)
    for m in (straight, resumed):
        assert m["train_step_compilations"] == 1 and m["train_step_executables"] == 1, m
    a, meta_a = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "straight")[-1])
    b, meta_b = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "killed")[-1])
    assert meta_a["step"] == meta_b["step"] == 12
    # every array of the state: weights, RNG state, margins, optimizer moments and counters, step
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert {"params", "frozen", "non_trainable", "opt_state", "step"} == set(a) and len(jax.tree.leaves(a)) > 50
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in meta_a["history"]] == pytest.approx([r["loss"] for r in meta_b["history"]], rel=1e-5)
    assert straight["final"] == pytest.approx(resumed["final"])


def test_data_stream_skips_to_the_same_batches(data_dir):
    from guie_nb.data.prepare import load_manifest
    from guie_nb.data.pipeline import train_dataset

    files = [data_dir / f for f in load_manifest(data_dir)["train_files"]]
    full = list(train_dataset(files, 32, 8, seed=3, epoch=1, steps=6, steps_per_execution=2).as_numpy_iterator())
    again = list(train_dataset(files, 32, 8, seed=3, epoch=1, steps=6, steps_per_execution=2).as_numpy_iterator())
    skipped = list(train_dataset(files, 32, 8, seed=3, epoch=1, steps=6, skip_steps=4,
                                 steps_per_execution=2).as_numpy_iterator())
    other_epoch = next(train_dataset(files, 32, 8, seed=3, epoch=2, steps=6, steps_per_execution=2).as_numpy_iterator())
    assert len(full) == 3 and len(skipped) == 1 and full[0][0]["image"].shape == (2, 8, 32, 32, 3)
    for (x, y), (x2, y2) in zip(full, again):
        np.testing.assert_array_equal(x["image"], x2["image"])
    np.testing.assert_array_equal(full[2][0]["image"], skipped[0][0]["image"])
    np.testing.assert_array_equal(full[2][1], skipped[0][1])
    assert not np.array_equal(full[0][0]["image"], other_epoch[0]["image"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    model = ModelConfig(dropout=0.0, head={"kind": "cosface", "scale": 16.0, "margin": 0.1})
    cfg = TrainConfig(epochs=3, batch_size=16, steps_per_epoch=2, learning_rate=1e30, optimizer="sgd",
                      warmup_epochs=0.0, weight_decay=0.0, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="non-finite") as err:
        train(data_dir, tmp_path, model, cfg)
    kept = checkpoint.list_checkpoints(tmp_path)
    assert kept, "no checkpoint was written before the loss went non-finite"
    assert str(kept[-1]) in str(err.value)
    arrays, _ = checkpoint.load(kept[-1])
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(arrays["params"]))
