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
