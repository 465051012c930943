"""Shared by the export tests: a random-init demo model on disk and the export CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# a few probes that still cover tiny, very wide, grayscale, RGBA and CMYK inputs (fast tests)
FAST_PROBES = "tiny_1x1,wide_60x1600,gray_300x200,rgba_256x320,cmyk_240x320"


def save_demo_model(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random-init demo-tiny embedding model as the trainer writes it (config + weights)."""
    import keras

    from guie_nb.model.embedding import ModelConfig, build_embedding_model
    from guie_nb.run_dir import EMBEDDING_WEIGHTS, MODEL_CONFIG

    keras.utils.set_random_seed(seed)
    cfg = ModelConfig(**{"backbone": "demo-tiny", **overrides})
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save(folder / MODEL_CONFIG)
    build_embedding_model(cfg).save_weights(folder / EMBEDDING_WEIGHTS)
    return folder


def run_export_cli(model_dir: Path, fmt: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m guie_nb.export.build` in a fresh process (the SavedModel needs the TF backend)."""
    report = out.with_suffix(".report.json")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-m", "guie_nb.export.build", "--model-dir", str(model_dir),
                           "--format", fmt, "--out", str(out), "--report", str(report), *extra],
                          capture_output=True, text=True, env=env)
    return proc, (json.loads(report.read_text()) if report.is_file() else {})


def assert_torchscript_reproduces_keras(model, cfg, tmp_path: Path, sizes=((1, 1), (97, 301), (224, 224))) -> None:
    """The saved and reloaded TorchScript module gives the Keras model's embeddings (atol 2e-5)."""
    import numpy as np
    import torch

    from guie_nb.export.checks import keras_reference, probe_images
    from guie_nb.export.torchscript import build_torch_module, save_torchscript

    module = torch.jit.load(str(save_torchscript(build_torch_module(model, cfg), tmp_path / "saved_model.pt")))
    reference = keras_reference(model, cfg)
    for image in probe_images(list(sizes)):
        with torch.no_grad():
            out = module(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()
        np.testing.assert_allclose(out[0], reference(image), atol=2e-5)


def assert_submission_verified(model_dir: Path, fmt: str, tmp_path: Path) -> None:
    """The export CLI writes a zip that passes verification in the scorer runtime (64-d, cosine >= 0.9999)."""
    proc, report = run_export_cli(model_dir, fmt, tmp_path / "submission.zip", "--probes", FAST_PROBES,
                                  "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["ok"] and report["embedding_dim"] == 64 and report["min_cosine"] >= 0.9999


def two_tower_model(extra_backbones: list[dict], seed: int = 0, **overrides):
    """`(cfg, model)`: a seeded demo-tiny model with `extra_backbones` concatenated, dropout off."""
    import keras

    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    keras.utils.set_random_seed(seed)
    cfg = ModelConfig(backbone="demo-tiny", extra_backbones=extra_backbones, dropout=0.0, **overrides)
    return cfg, build_embedding_model(cfg)
