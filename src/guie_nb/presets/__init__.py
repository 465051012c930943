"""Presets: named parameter sets for the notebooks, each a small module.

A preset module defines `notebook_params(root: str) -> dict[str, dict]`, mapping each kernel of its
chain to the values of its notebook's parameters; `root` is where the chain writes its outputs. A
kernel is a notebook (`01_data_prep`, `02_train_tpu`, `03_finetune`, `04_export`, `05_submit`) or a
notebook run as a named stage (`03_finetune:backbone-280`); a preset may leave the training notebooks
out (`guie_nb.stages` has the rules). A preset with several training stages states them as data
(`presets._kaggle.Stage`, `staged_chain_params`).
"""

from __future__ import annotations

import importlib
import pkgutil

from guie_nb.stages import check_chain


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def notebook_params(name: str, root: str | None = None) -> dict[str, dict]:
    if name not in available():
        raise ValueError(f"unknown preset {name!r}; available: {available()}")
    module = importlib.import_module(f"{__name__}.{name}")
    params = module.notebook_params(root or f"build/{name}")
    try:
        check_chain(params)
    except ValueError as err:
        raise ValueError(f"preset {name!r}: {err}") from None
    return params


def kernel_machines(name: str) -> dict[str, str]:
    """Kernel key -> the Kaggle `machine_shape` it is staged on, where the preset moves a kernel off
    its template's machine (`KERNEL_MACHINES` in the preset module, e.g. `{"04_export":
    "NvidiaTeslaT4"}` for an export too heavy for a CPU kernel's 12 h). Empty when it moves none.
    Raises ValueError for an unknown preset or a key that is not one of its kernels."""
    if name not in available():
        raise ValueError(f"unknown preset {name!r}; available: {available()}")
    machines = dict(getattr(importlib.import_module(f"{__name__}.{name}"), "KERNEL_MACHINES", {}))
    unknown = sorted(set(machines) - set(notebook_params(name)))
    if unknown:
        raise ValueError(f"preset {name!r}: KERNEL_MACHINES names {unknown}, which are not kernels of its chain")
    return machines


def final_model(name: str) -> tuple[dict | None, bool]:
    """The model the preset's export exports, as a dict, and whether it exports with flip TTA.

    An export that concatenates runs (`concat`) gives the combined model of the runs' models
    (`guie_nb.model.concat.concat_config`); a staged preset (a module with `MODEL` and `STAGES`)
    gives its stages' data; otherwise the last training kernel's model with each fine-tune's
    `model_changes` / `image_size` applied, or, when the preset trains nothing, the export's own
    `model` parameter or its `zero_shot` section's model. None when the preset names no model."""
    from guie_nb.presets import _kaggle
    from guie_nb.stages import notebook_of

    module = importlib.import_module(f"{__name__}.{name}")
    params = notebook_params(name)
    export = params["04_export"]
    model = None
    if isinstance(export.get("concat"), dict):
        model = _concat_model(params, export["concat"])
    elif hasattr(module, "STAGES") and hasattr(module, "MODEL"):
        model = _kaggle.final_model(module.MODEL, module.STAGES)
    else:
        for key, values in params.items():
            nb = notebook_of(key)
            if nb == "02_train_tpu":
                model = dict(values["model"])
            elif nb == "03_finetune" and model is not None:
                model = _kaggle.apply_changes(model, values.get("model_changes") or {})
                if values.get("image_size"):
                    model["image_size"] = values["image_size"]
        if model is None and isinstance(export.get("model"), dict):
            model = dict(export["model"])
        if model is None and isinstance(export.get("zero_shot"), dict):  # 04 builds it: pretrained + PCA
            model = dict(export["zero_shot"]["model"])
    flip = bool(export.get("flip_tta")) or bool(model and model.get("flip_tta"))
    return model, flip


def _concat_model(params: dict[str, dict], concat: dict) -> dict:
    """The combined model of a `concat` export: each part's first run folder's model, as the
    training kernel writing that folder trains it (a fine-tune: its init_dir's model changed)."""
    from guie_nb.model.concat import concat_config
    from guie_nb.presets import _kaggle
    from guie_nb.stages import notebook_of

    by_dir: dict[str, dict] = {}
    for key, values in params.items():
        nb = notebook_of(key)
        if nb == "02_train_tpu":
            by_dir[values["out_dir"]] = dict(values["model"])
        elif nb == "03_finetune" and values.get("init_dir") in by_dir:
            model = _kaggle.apply_changes(by_dir[values["init_dir"]], values.get("model_changes") or {})
            if values.get("image_size"):
                model["image_size"] = values["image_size"]
            by_dir[values["out_dir"]] = model
    dirs = [part["model_dirs"][0] for part in concat["parts"]]
    missing = [d for d in dirs if d not in by_dir]
    if missing:
        raise ValueError(f"concat parts {missing} are not written by any training kernel of the preset")
    return concat_config([by_dir[d] for d in dirs], concat.get("embedding_dim", 64))
