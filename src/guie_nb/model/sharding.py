"""How the training notebook lays the model over the accelerators (keras.distribution).

"data_parallel": every device holds the whole model, the batch is split (the default when a
replica fits, see `memory_plan`). "model_parallel": weights sharded on a 2-D mesh `(batch, model)`:
the ViT's big matrices are split Megatron-style over `model` (in_proj / c_fc by output columns,
out_proj / c_proj by input rows) and FSDP-style over `batch` (their other dimension), so each
device holds 1/n of them; small vectors are replicated and the batch is split over `batch`.
`model_parallel=1` is pure FSDP (each device computes batch/n; XLA gathers a block's weights
when it runs); larger values also split each block's compute and activations.
The layouts are keyed on the variable paths of `guie_nb.model.vit` (e.g.
`resblocks_3/attn/in_proj/kernel`), so they apply to the ViT alone and to models that contain it.
"""

from __future__ import annotations

import keras
from keras import distribution as kd

LAYOUTS = ("data_parallel", "model_parallel")

# Patterns (re.fullmatch on variable paths, as LayoutMap does) -> axes; a path matches at most one.
VIT_LAYOUT: dict[str, tuple[str | None, ...]] = {
    r"(.*/)?attn/in_proj/kernel": ("batch", "model"),
    r"(.*/)?attn/in_proj/bias": ("model",),
    r"(.*/)?attn/out_proj/kernel": ("model", "batch"),
    r"(.*/)?c_fc/kernel": ("batch", "model"),
    r"(.*/)?c_fc/bias": ("model",),
    r"(.*/)?c_proj/kernel": ("model", "batch"),
    r"(.*/)?conv1/kernel": (None, None, None, "model"),
    r"(.*/)?proj/kernel": ("model", "batch"),
}


def vit_layout_map(mesh: kd.DeviceMesh) -> kd.LayoutMap:
    """The LayoutMap that shards the ViT's matrices over `mesh` (axes `batch`, `model`)."""
    layout_map = kd.LayoutMap(mesh)
    for pattern, axes in VIT_LAYOUT.items():
        layout_map[pattern] = axes
    return layout_map


def make_distribution(layout: str, devices=None, model_parallel: int | None = None) -> kd.Distribution:
    """A keras.distribution for `layout` over `devices` (default: all of them).

    `model_parallel`: size of the mesh's `model` axis for "model_parallel" (default 1: FSDP);
    it must divide the device count, and the device count must divide the ViT width / MLP width.
    Use as `keras.distribution.set_distribution(dist)` before building the model.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    devices = list(devices) if devices is not None else kd.list_devices()
    if layout == "data_parallel":
        if model_parallel not in (None, 1):
            raise ValueError(f"data_parallel replicates the model; got model_parallel={model_parallel}")
        return kd.DataParallel(devices=devices)
    model_parallel = model_parallel or 1
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} does not divide the {len(devices)} devices")
    mesh = kd.DeviceMesh(
        shape=(len(devices) // model_parallel, model_parallel), axis_names=("batch", "model"), devices=devices
    )
    return kd.ModelParallel(layout_map=vit_layout_map(mesh), batch_dim_name="batch")


def describe_sharding(model: keras.Model) -> dict[str, str]:
    """variable path -> how its value is laid out now (for logs and tests; JAX backend)."""
    out = {}
    for variable in model.weights:
        sharding = getattr(variable.value, "sharding", None)
        out[variable.path] = str(getattr(sharding, "spec", sharding))
    return out
