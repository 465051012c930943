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
    """Loss and validation mP@5 per epoch; saved as PNG when `out_png` is given."""
    import csv

    import matplotlib

    matplotlib.use("Agg") if out_png and "ipykernel" not in sys.modules else None
    import matplotlib.pyplot as plt

    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(epochs, [float(r["loss"]) for r in rows], marker="o")
    ax1.set(title="training loss", xlabel="epoch")
    for key in [k for k in rows[0] if k.startswith("val_map5")] if rows else []:
        ax2.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key.removeprefix("val_"))
    ax2.set(title="validation mP@5", xlabel="epoch", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    if out_png:
        fig.savefig(out_png, dpi=100)
    return fig
