"""Baked parameters and papermill-injected ones: one serializer, values that round-trip exactly.

Kaggle runs a staged notebook with its values baked into the `parameters` cell; a local run
injects them with papermill. Both must hand the notebook the same values: here every value is
baked, executed in a fresh namespace and compared with the original (types included: a tuple
stays a tuple, True does not become 1, -0.0 keeps its sign, nan stays nan), and compared with
what papermill injects.
"""

from __future__ import annotations

import math
import random
from pathlib import Path, PurePosixPath

import nbformat
import numpy as np
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from papermill.translators import PythonTranslator, papermill_translators

from guie_nb.notebook_build import (
    bake_parameters, build_notebook, parameters_cell, python_literal, use_for_papermill, write_notebook,
)

REPO = Path(__file__).resolve().parents[1]
# a literal may use no name but `float` (for inf and nan): no import is ever needed
NAMESPACE = {"__builtins__": {"float": float}}

TRICKY_STRINGS = [
    "", "plain", "it's", 'say "hi"', "back\\slash", "ends with \\", '\\"', "new\nline\r\ttab",
    "\x00nul", "\x7f", "café", "日本語", "emoji 😀", "\u2028line sep", "\ud800 lone surrogate",
    "# not a comment", "{braces}", "'''", '"""', "f'{x}'",
]
VALUES = [
    None, True, False, 0, -1, 7, 2**63, -(2**100), 10**5000, 0.0, -0.0, 1.5, 1e-300, 5e-324, 1e300,
    float("inf"), float("-inf"), float("nan"), *TRICKY_STRINGS,
    [], (), (1,), (1, 2), [1, (2, 3)], ((1, (2,)), []), {}, {"a": 1}, {"a": {"b": [1, {"c": None}]}},
    {"shape": (224, 224), "pairs": [(1, 2), (3, 4)]}, {1: "one", (2, 3): "pair", None: 0, 2.5: True},
    [float("inf"), {"max_gb": float("-inf"), "x": float("nan")}],
]


def same(a, b) -> bool:
    """Equal and of the same type all the way down; nan equals nan; 0.0 differs from -0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    return a == b


def test_same_sees_type_changes():
    assert same([1, {"a": float("nan")}], [1, {"a": float("nan")}])
    assert not same(1, True) and not same([1], (1,)) and not same(0.0, -0.0) and not same(1, 1.0)
    assert not same({1: 0}, {"1": 0}) and not same({"a": 1, "b": 2}, {"b": 2, "a": 1})


def random_value(rng: random.Random, depth: int = 0, papermill_safe: bool = False):
    """A random parameter value: scalars, and lists/tuples/dicts of them up to depth 3.

    With `papermill_safe`, only what stock papermill translates faithfully: no tuples, string
    dict keys, ints within str()'s digit limit.
    """
    kinds = ["none", "bool", "int", "float", "special", "str"]
    if not papermill_safe:
        kinds.append("bigint")
    if depth < 3:
        kinds += ["list", "dict"] * 2 + ([] if papermill_safe else ["tuple"] * 2)
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-1000, 1000)
    if kind == "bigint":
        return rng.choice([-1, 1]) * rng.randint(10**4400, 10**4500)
    if kind == "float":
        return rng.choice([rng.uniform(-1e3, 1e3), rng.random() * 10.0 ** rng.randint(-320, 300), -0.0])
    if kind == "special":
        return rng.choice([float("inf"), float("-inf"), float("nan")])
    if kind == "str":
        pool = "".join(TRICKY_STRINGS) + "abcxyz 0123"
        return "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
    items = [random_value(rng, depth + 1, papermill_safe) for _ in range(rng.randint(0, 4))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    keys = [random_key(rng, papermill_safe) for _ in items]
    return dict(zip(keys, items))


def random_key(rng: random.Random, papermill_safe: bool):
    if papermill_safe or rng.random() < 0.6:
        return "".join(rng.choice("ab'\"\\\nü😀") for _ in range(rng.randint(0, 4)))
    # hashable, and equal to itself (no nan: a nan key can never be looked up again)
    return rng.choice([rng.randint(-50, 50), 2.5, -0.0, None, True, (1, "a"), ((), (2,))])


GENERATED = [random_value(random.Random(seed)) for seed in range(300)]
PAPERMILL_SAFE = [random_value(random.Random(seed), papermill_safe=True) for seed in range(300)]


def children(value) -> list:
    if type(value) is dict:
        return [*value.keys(), *value.values()]
    return list(value) if type(value) in (list, tuple) else []


def bake_and_run(value):
    """Bake `value` into a one-parameter notebook cell, execute the cell, return what it assigns."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 0  # the value\ny = 1", metadata={"tags": ["parameters"]})]
    bake_parameters(nb, {"x": value}, "synthetic")
    lines = parameters_cell(nb).source.splitlines()
    assert len(lines) == 2 and lines[0].endswith("  # the value") and lines[1] == "y = 1"
    namespace = dict(NAMESPACE)
    exec(parameters_cell(nb).source, namespace)
    return namespace["x"]


def show(value) -> str:
    """repr, or a stand-in where repr fails (ints past str()'s 4300-digit limit)."""
    try:
        return repr(value)
    except ValueError:
        return "<holds an int too long for repr>"


@pytest.mark.parametrize("value", VALUES, ids=lambda v: show(v)[:40])
def test_listed_values_round_trip(value):
    assert same(bake_and_run(value), value)


def test_generated_values_round_trip():
    nested = [v for v in GENERATED if any(isinstance(x, (list, tuple, dict)) for x in children(v))]
    assert len(nested) > 50 and any(type(v) is tuple for v in nested)  # nesting is exercised
    for seed, value in enumerate(GENERATED):
        assert same(bake_and_run(value), value), f"seed {seed}: {show(value)}"


def test_baked_text_is_what_stock_papermill_injects():
    """Where papermill's own translator is faithful, the baked text is exactly its text."""
    faithful = 0
    for value in VALUES + GENERATED:
        try:
            text = PythonTranslator.translate(value)
            back = eval(text, dict(NAMESPACE))
        except ValueError:  # papermill cannot write ints past str()'s digit limit
            continue
        except SyntaxError:  # papermill's text for a tuple is str(tuple) quoted: not always valid Python
            continue
        if same(back, value):
            faithful += 1
            assert python_literal(value) == text, show(value)
    assert faithful > 100
    for value in PAPERMILL_SAFE:
        assert python_literal(value) == PythonTranslator.translate(value), show(value)
    # ... and where it is not, ours keeps the value (papermill writes a tuple as a string)
    assert PythonTranslator.translate((1, 2)) == '"(1, 2)"' and python_literal((1, 2)) == "(1, 2)"
    assert PythonTranslator.translate({1: 2}) == '{"1": 2}' and python_literal({1: 2}) == "{1: 2}"


@pytest.fixture
def papermill_registry(monkeypatch):
    """papermill's translator registry, restored after the test (use_for_papermill changes it)."""
    monkeypatch.setattr(papermill_translators, "_translators", dict(papermill_translators._translators))
    return papermill_translators


def injected_values(path: Path, params: dict) -> dict:
    """papermill's injected-parameters cell for `params`, executed; the notebook read as papermill reads it."""
    nb = load_notebook_node(str(path))
    injected = parameterize_notebook(nb, params, kernel_name="python3", language="python")
    cell = next(c for c in injected.cells if "injected-parameters" in c.metadata.get("tags", []))
    namespace = dict(NAMESPACE)
    exec(cell.source, namespace)
    return {k: namespace[k] for k in params}


def test_papermill_injection_and_baking_give_the_same_values(papermill_registry, tmp_path):
    nb = write_notebook(build_notebook(REPO / "notebooks" / "01_data_prep.py"), tmp_path / "01_data_prep.ipynb")
    names = ["out_dir", "max_side", "seed", "processes", "max_output_gb", "sources"]
    safe = [dict(zip(names, PAPERMILL_SAFE[i:i + len(names)])) for i in range(0, 60, len(names))]
    everything = [dict(zip(names, GENERATED[i:i + len(names)])) for i in range(0, 60, len(names))]
    everything.append(dict(zip(names, [float("inf"), (1, 2), {3: (4,)}, 10**5000, float("nan"), "é\"\n"])))

    def baked_values(params):
        baked = build_notebook(REPO / "notebooks" / "01_data_prep.py", params)
        namespace = dict(NAMESPACE)
        exec(parameters_cell(baked).source, namespace)
        return {k: namespace[k] for k in params}

    for params in safe:  # stock papermill, on what it translates faithfully
        assert same(injected_values(nb, params), baked_values(params)), show(params)
    use_for_papermill()
    assert papermill_registry.find_translator("python3", "python").__name__ == "LiteralTranslator"
    for params in safe + everything:  # papermill with our translator, on everything
        injected, baked = injected_values(nb, params), baked_values(params)
        assert same(injected, baked) and same(baked, params), show(params)


def test_infinite_output_budget_bakes_and_runs():
    """Issue 16: `max_output_gb = inf` was baked as the bare name `inf`, a NameError on Kaggle."""
    nb = build_notebook(REPO / "notebooks" / "01_data_prep.py", {"max_output_gb": float("inf")})
    source = parameters_cell(nb).source
    assert "max_output_gb = float('inf')  # Kaggle keeps 20 GB" in source
    namespace: dict = {}
    exec(source, namespace)
    assert namespace["max_output_gb"] == math.inf


@pytest.mark.parametrize("value, where, hint", [
    (PurePosixPath("/kaggle/working"), "out_dir", r"str\(path\)"),
    ({"b", "a"}, "out_dir", "sorted list"),
    (np.float32(1.5), "out_dir", r"value\.item\(\)"),
    (object(), "out_dir", "use None, bool, int, float, str"),
    ([1, {"x": {2}}], r"out_dir\[1\]\['x'\]", "sorted list"),
    ({(1, Path("k")): 1}, r"a key of out_dir\[1\]", r"str\(path\)"),
])
def test_values_without_a_faithful_literal_are_refused(value, where, hint):
    nb = build_notebook(REPO / "notebooks" / "01_data_prep.py")
    before = parameters_cell(nb).source
    with pytest.raises(TypeError, match=rf"01_data_prep: {where} = .*no faithful Python literal; .*{hint}"):
        bake_parameters(nb, {"seed": 1, "out_dir": value}, "01_data_prep")
    assert parameters_cell(nb).source == before  # nothing half-baked
    with pytest.raises(TypeError, match="no faithful Python literal"):
        python_literal(value)


def test_papermill_with_our_translator_refuses_them_too(papermill_registry, tmp_path):
    use_for_papermill()
    path = write_notebook(build_notebook(REPO / "notebooks" / "01_data_prep.py"), tmp_path / "01_data_prep.ipynb")
    nb = load_notebook_node(str(path))
    with pytest.raises(TypeError, match=r"out_dir = PosixPath.*str\(path\)"):
        parameterize_notebook(nb, {"out_dir": Path("/x")}, kernel_name="python3", language="python")
