"""The training notebook under papermill on the JAX backend with 8 emulated CPU devices (data
parallel over them), on a small demo dataset: the loss falls and the outputs are written."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402


def test_training_notebook_on_8_emulated_devices(tmp_path):
    papermill = pytest.importorskip("papermill")
    from guie_nb.notebook_build import build_notebook, write_notebook

    data = make_small_data(tmp_path)
    nb = write_notebook(build_notebook(REPO / "notebooks" / "02_train_tpu.py"), tmp_path / "02_train_tpu.ipynb")
    out = tmp_path / "train"
    params = {
        "data_dir": str(data), "out_dir": str(out), "keras_backend": "jax", "cpu_devices": 8,
        "model": {"backbone": "demo-tiny", "dropout": 0.0, "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1}},
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 3e-3, "warmup_epochs": 0.5, "steps_per_epoch": 4,
                  "steps_per_execution": 2, "checkpoint_every": 2},
    }
    env_path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path  # the kernel imports this checkout's guie_nb
    try:
        papermill.execute_notebook(str(nb), str(tmp_path / "executed.ipynb"), parameters=params, cwd=str(REPO),
                                   kernel_name="python3", progress_bar=False)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["devices"] == 8 and metrics["mesh"] == {"batch": 8}, metrics
    assert metrics["train_step_compilations"] == 1 and metrics["train_step_executables"] == 1
    rows = list(csv.DictReader((out / "history.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert {"val_map5", "val_map5_products10k", "val_map5_gldv2"} <= set(rows[0])
    for name in ("model_config.json", "embedding.weights.h5", "training_model.weights.h5", "history.png"):
        assert (out / name).is_file(), name
