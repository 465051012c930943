"""Build `.ipynb` files from the jupytext sources: reproducible bytes, kernelspec, baked parameters.

The same builder serves `make notebooks`, the local papermill runner, the tests (nbmake) and
Kaggle staging, where no papermill injects parameters: a profile's values are baked into the
`parameters` cell instead. Baked values and papermill-injected ones are written by one serializer,
`python_literal` (papermill's own Python translator, made faithful where it is not), so the two runs
of one preset see the same values.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path, PurePath

import jupytext
import nbformat
from papermill.translators import PythonTranslator, papermill_translators

from guie_nb.stages import NOTEBOOK_ORDER  # noqa: F401  (re-exported)

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


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


_SCALARS = (type(None), bool, int, float, str)


class LiteralTranslator(PythonTranslator):
    """papermill's `PythonTranslator`, extended where its output is not the value it was given.

    Kept from papermill: None, bools, ints, floats (non-finite ones as `float('inf')`,
    `float('-inf')`, `float('nan')`, which need no import), strings (double-quoted,
    `unicode_escape`d), lists and dicts with string keys. Added: tuples (papermill injects
    `str(value)` as a *string*), dict keys that are not strings (papermill turns `{1: x}` into
    `{"1": x}`) and ints past Python's 4300-digit `str()` limit (written in hex). Refused with a
    TypeError: every other type (see `check_literal`).
    """

    @classmethod
    def translate(cls, val) -> str:
        if type(val) is tuple:
            return cls.translate_tuple(val)
        if type(val) not in (*_SCALARS, list, dict):
            check_literal(val)  # raises the explanatory TypeError
        return super().translate(val)

    @classmethod
    def translate_tuple(cls, val: tuple) -> str:
        items = [cls.translate(v) for v in val]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"

    @classmethod
    def translate_dict(cls, val: dict) -> str:
        # papermill writes every key with translate_str, which stringifies ints, tuples, ...
        return "{" + ", ".join(f"{cls.translate(k)}: {cls.translate(v)}" for k, v in val.items()) + "}"

    @classmethod
    def translate_int(cls, val: int) -> str:
        try:
            return super().translate_int(val)
        except ValueError:  # more digits than sys.get_int_max_str_digits(); hex has no such limit
            return hex(val)

    @classmethod
    def codify(cls, parameters: dict, comment: str = "Parameters") -> str:
        for name, value in parameters.items():
            check_literal(value, name)
        return super().codify(parameters, comment)


def check_literal(value, where: str = "value") -> None:
    """Raise TypeError unless `value` is built only of None, bool, int, float, str, list, tuple, dict.

    Those are the types with a Python literal that evaluates back to an equal value of the same
    type. The error names where in the structure the offending value sits, e.g. `model['head']`.
    Refused on purpose: `pathlib.Path` (pass `str(path)`: papermill would inject the string, a
    baked `PosixPath(...)` would be a NameError), sets (no stable order, so no reproducible bytes;
    pass a sorted list), numpy scalars (pass `.item()`), any other object.
    """
    kind = type(value)
    if kind in (list, tuple):
        for i, v in enumerate(value):
            check_literal(v, f"{where}[{i}]")
    elif kind is dict:
        for k, v in value.items():
            check_literal(k, f"a key of {where}")
            check_literal(v, f"{where}[{k!r}]")
    elif kind not in _SCALARS:
        raise TypeError(f"{where} = {value!r}: a {kind.__module__}.{kind.__qualname__} has no faithful "
                        f"Python literal; {_literal_hint(value)}")


def _literal_hint(value) -> str:
    if isinstance(value, PurePath):
        return "pass str(path) (the notebook gets the string papermill would inject)"
    if isinstance(value, (set, frozenset)):
        return "pass a sorted list (a set has no stable order, so baked notebooks would not be reproducible)"
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return "pass value.item() (a numpy scalar)"
    return "use None, bool, int, float, str, or lists, tuples and dicts of them"


def python_literal(value, where: str = "value") -> str:
    """One line of Python source that evaluates, with no imports, to a value equal to `value`.

    The text is what papermill (with `use_for_papermill()`) injects for the same value.
    Raises TypeError (naming `where`) for values without a faithful literal: see `check_literal`.
    """
    check_literal(value, where)
    return LiteralTranslator.translate(value)


def use_for_papermill() -> None:
    """Make papermill inject parameters of Python notebooks with `LiteralTranslator`.

    Global for this process (papermill keeps one translator registry); call it before
    `papermill.execute_notebook` so local runs see the values that Kaggle staging bakes.
    """
    papermill_translators.register("python", LiteralTranslator)


def bake_parameters(nb, params: dict, notebook: str) -> None:
    """Replace the values of the named parameters in the `parameters` cell with `params`.

    Each value is written by `python_literal` (TypeError for values without a faithful literal);
    a comment after the old value is kept.
    """
    check_parameters(nb, params, notebook)
    for name, value in params.items():
        try:
            check_literal(value, name)
        except TypeError as e:
            raise TypeError(f"{notebook}: {e}") from None
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
                lines[node.lineno - 1:node.end_lineno] = [f"{name} = {python_literal(params[name], name)}{comment}"]
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
    """Build every notebook into `out_dir`; `params` maps notebook name -> values to bake (one
    build per notebook: a preset's stages are built per kernel by `build_notebook`)."""
    params = params or {}
    unknown = sorted(set(params) - set(NOTEBOOK_ORDER))
    if unknown:
        raise ValueError(f"parameters for unknown notebook(s) {unknown}; notebooks: {list(NOTEBOOK_ORDER)}")
    return [write_notebook(build_notebook(src, params.get(src.stem)), Path(out_dir) / f"{src.stem}.ipynb")
            for src in source_files(notebook_dir)]
