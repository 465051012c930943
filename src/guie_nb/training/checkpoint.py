"""Checkpoints in `out_dir/checkpoints/`: every variable (model weights, RNG state, margins),
the optimizer state, and where training stands, in one `.npz` written atomically.

A Kaggle session can end at any moment; a checkpoint is either complete or absent (write to a
temporary name, then rename), and the newest complete one is what a rerun resumes from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save(out_dir: str | Path, step: int, arrays: dict[str, list], meta: dict, keep: int = 2) -> Path:
    """Write `ckpt-<step>.npz` holding each named list of arrays plus `meta` (JSON); prune old ones."""
    d = checkpoint_dir(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    flat = {f"{name}/{i:05d}": np.asarray(a) for name, items in arrays.items() for i, a in enumerate(items)}
    flat["meta"] = np.frombuffer(json.dumps({**meta, "step": step}).encode(), np.uint8)
    path = d / f"ckpt-{step:09d}.npz"
    tmp = d / f".tmp-{step:09d}-{os.getpid()}.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **flat)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), key=lambda p: int(_NAME.match(p.name)[1]))


def load(path: str | Path) -> tuple[dict[str, list[np.ndarray]], dict]:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        arrays: dict[str, list[np.ndarray]] = {}
        for key in sorted(k for k in z.files if k != "meta"):
            name = key.rsplit("/", 1)[0]
            arrays.setdefault(name, []).append(z[key])
    return arrays, meta


def latest(out_dir: str | Path) -> tuple[dict[str, list[np.ndarray]], dict] | None:
    """The newest readable checkpoint, or None. An unreadable newest one (cut off mid-write by a
    filesystem without atomic rename) falls back to the one before, with a warning."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            return load(path)
        except (OSError, ValueError, KeyError) as e:
            print(f"warning: skipping unreadable checkpoint {path}: {e}")
    return None
