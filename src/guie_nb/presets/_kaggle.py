"""Shared parts of the full-size presets: Kaggle input paths and the export step."""

from __future__ import annotations

KAGGLE_INPUT = "/kaggle/input"


def export_params(root: str, model_dir: str, train_dir: str) -> dict:
    return {"data_dir": f"{root}/data", "model_dir": model_dir, "train_dir": train_dir, "out_dir": root}
