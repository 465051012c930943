"""Building notebooks from the jupytext sources: reproducible, runnable by papermill, baked."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from guie_nb import presets
from guie_nb.notebook_build import (
    NOTEBOOK_ORDER, bake_parameters, build_all, build_notebook, parameter_names, parameters_cell,
)
from guie_nb.stages import notebook_of

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "notebooks"


def test_build_is_byte_identical(tmp_path):
    first = [p.read_bytes() for p in build_all(SOURCES, tmp_path / "a")]
    second = [p.read_bytes() for p in build_all(SOURCES, tmp_path / "b")]
    assert first == second
    assert [p.stem for p in build_all(SOURCES, tmp_path / "a")] == list(NOTEBOOK_ORDER)


@pytest.mark.parametrize("name", NOTEBOOK_ORDER)
def test_notebook_has_kernelspec_story_and_parameters(tmp_path, name):
    nb = build_notebook(SOURCES / f"{name}.py")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown"  # it opens with prose
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 2
    assert parameter_names(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)  # every code cell is valid Python
    nbformat.validate(nb)


def test_every_preset_matches_notebook_parameters():
    names = {name: set(parameter_names(build_notebook(SOURCES / f"{name}.py"))) for name in NOTEBOOK_ORDER}
    for preset in presets.available():
        params = presets.notebook_params(preset, "/tmp/root")
        for key, values in params.items():  # a kernel: a notebook, or a notebook run as a stage
            assert set(values) <= names[notebook_of(key)], (preset, key)


def test_baking_replaces_values_and_keeps_comments(tmp_path):
    params = presets.notebook_params("demo", "/abs/root")
    paths = build_all(SOURCES, tmp_path, params)
    nb = nbformat.read(paths[1], as_version=4)
    namespace: dict = {}
    exec(parameters_cell(nb).source, namespace)
    for key, value in params["02_train_tpu"].items():
        assert namespace[key] == value
    assert "#" in parameters_cell(nb).source  # explanatory comments survive


def test_unknown_parameter_is_a_clear_error():
    nb = build_notebook(SOURCES / "02_train_tpu.py")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epochz'\]"):
        bake_parameters(nb, {"epochz": 3}, "02_train_tpu")
    with pytest.raises(ValueError, match="unknown notebook"):
        build_all(SOURCES, "/tmp/unused", {"05_nope": {}})
    with pytest.raises(ValueError, match="unknown preset"):
        presets.notebook_params("dmeo")
