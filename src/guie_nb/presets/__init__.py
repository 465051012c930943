"""Presets: named parameter sets for the notebooks, each a small module.

A preset module defines `notebook_params(root: str) -> dict[str, dict]`, mapping each notebook
(`01_data_prep`, `02_train_tpu`, `03_finetune`, `04_export`, `05_submit`) to the values of its parameters;
`root` is where the chain writes its outputs. A preset without training (zero-shot) omits
`02_train_tpu` and `03_finetune` (`OPTIONAL`); every other notebook is required.
"""

from __future__ import annotations

import importlib
import pkgutil

from guie_nb.notebook_build import NOTEBOOK_ORDER

OPTIONAL = ("02_train_tpu", "03_finetune")  # the training notebooks: a zero-shot preset has none


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def notebook_params(name: str, root: str | None = None) -> dict[str, dict]:
    if name not in available():
        raise ValueError(f"unknown preset {name!r}; available: {available()}")
    module = importlib.import_module(f"{__name__}.{name}")
    params = module.notebook_params(root or f"build/{name}")
    missing = [nb for nb in NOTEBOOK_ORDER if nb not in params and nb not in OPTIONAL]
    if missing:
        raise ValueError(f"preset {name!r} gives no parameters for {missing}")
    return params
