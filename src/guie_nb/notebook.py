"""Small helpers the notebooks call before and after the real work."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BACKENDS = ("jax", "tensorflow", "torch")


def use_backend(name: str, cpu_devices: int = 0) -> str:
    """Select the Keras backend (and, for JAX on CPU, emulated devices) before keras is imported."""
    if name not in BACKENDS:
        raise ValueError(f"unknown Keras backend {name!r}; choose one of {BACKENDS}")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise RuntimeError(f"keras is already imported with backend {keras.backend.backend()!r}; "
                               f"restart the kernel to use {name!r}")
    os.environ["KERAS_BACKEND"] = name
    if cpu_devices:
        if "jax" in sys.modules:
            raise RuntimeError("cpu_devices must be set before jax is imported; restart the kernel")
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(cpu_devices)}".strip()
    return name


def plot_history(history_csv: str | Path, out_png: str | Path | None = None):
    """Loss, learning rate and validation mP@5 per epoch (`guie_nb.plots.history`); PNG when `out_png`."""
    from guie_nb.plots import history

    return history(history_csv, out_png)
