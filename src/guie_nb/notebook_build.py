"""Build `.ipynb` files from the jupytext sources: reproducible bytes, kernelspec, baked parameters.

The same builder serves `make notebooks`, the local papermill runner, the tests (nbmake) and
Kaggle staging, where no papermill injects parameters: a profile's values are baked into the
`parameters` cell instead.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import jupytext
import nbformat

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
NOTEBOOK_ORDER = ("01_data_prep", "02_train_tpu", "03_finetune", "04_export")


def source_files(notebook_dir: str | Path) -> list[Path]:
    """The notebook sources in chain order."""
    d = Path(notebook_dir)
    files = [d / f"{name}.py" for name in NOTEBOOK_ORDER]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"notebook sources missing: {missing}")
    return files


def parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parameter_names(nb) -> list[str]:
    """Names assigned in the parameters cell, in order."""
    tree = ast.parse(parameters_cell(nb).source)
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def check_parameters(nb, params: dict, notebook: str) -> None:
    unknown = sorted(set(params) - set(parameter_names(nb)))
    if unknown:
        raise ValueError(f"{notebook}: unknown parameter(s) {unknown}; the notebook takes "
                         f"{parameter_names(nb)}")


def bake_parameters(nb, params: dict, notebook: str) -> None:
    """Replace the values of the named parameters in the `parameters` cell with `params`."""
    check_parameters(nb, params, notebook)
    cell = parameters_cell(nb)
    tree = ast.parse(cell.source)
    lines = cell.source.splitlines()
    # rewrite from the bottom so earlier line numbers stay valid
    for node in reversed(tree.body):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in params:
                tail = lines[node.end_lineno - 1][node.end_col_offset:]
                comment = "  #" + tail.split("#", 1)[1] if "#" in tail else ""
                lines[node.lineno - 1:node.end_lineno] = [f"{name} = {params[name]!r}{comment}"]
    cell.source = "\n".join(lines)


def build_notebook(source: str | Path, params: dict | None = None) -> nbformat.NotebookNode:
    source = Path(source)
    nb = jupytext.read(source)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    if params:
        bake_parameters(nb, params, source.stem)
    else:
        parameters_cell(nb)  # every notebook must have one
    for i, cell in enumerate(nb.cells):
        # stable ids: fresh jupytext conversions give random ones
        cell.id = hashlib.sha1(f"{source.stem}:{i}".encode()).hexdigest()[:12]
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nb


def write_notebook(nb, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(nb) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def build_all(notebook_dir: str | Path, out_dir: str | Path,
              params: dict[str, dict] | None = None) -> list[Path]:
    """Build every notebook into `out_dir`; `params` maps notebook name -> values to bake."""
    params = params or {}
    unknown = sorted(set(params) - set(NOTEBOOK_ORDER))
    if unknown:
        raise ValueError(f"parameters for unknown notebook(s) {unknown}; notebooks: {list(NOTEBOOK_ORDER)}")
    return [write_notebook(build_notebook(src, params.get(src.stem)), Path(out_dir) / f"{src.stem}.ipynb")
            for src in source_files(notebook_dir)]
