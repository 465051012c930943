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
