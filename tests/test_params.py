"""One source of truth for parameters: notebook defaults are the demo preset, and every value a
preset sets reaches the configs the notebook builds (`guie_nb.params`), for every preset and
notebook; a key nothing knows fails at staging."""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import nbformat
import pytest

from guie_nb import presets
from guie_nb.kaggle.layout import KaggleRoots
from guie_nb.kaggle.stage import stage_kernels
from guie_nb.notebook_build import NOTEBOOK_ORDER, build_notebook, parameters_cell
from guie_nb.params import PATH_PARAMS, TARGETS, check, lookup
from guie_nb.presets._kaggle import H14_LAION2B
from guie_nb.stages import notebook_of

REPO = Path(__file__).resolve().parents[1]


def _cell_values(source: str) -> dict:
    namespace: dict = {}
    exec(source, {"float": float}, namespace)
    return namespace


@pytest.mark.parametrize("nb", NOTEBOOK_ORDER)
def test_notebook_defaults_are_the_demo_preset(nb):
    cell = _cell_values(parameters_cell(build_notebook(REPO / "notebooks" / f"{nb}.py")).source)
    demo = presets.notebook_params("demo", "build/demo")[nb]
    assert {k: cell[k] for k in demo} == demo
    assert set(cell) <= set(TARGETS[nb]), f"{nb}: parameters with no place in the resolved config"


def _same(preset_value, resolved_value, key: str, where: str):
    """`preset_value` reached the resolved config: dicts walked key by key, paths compared absolute."""
    if isinstance(preset_value, dict):
        assert isinstance(resolved_value, dict), where
        for k, v in preset_value.items():
            assert k in resolved_value, f"{where}.{k} dropped"
            _same(v, resolved_value[k], k, f"{where}.{k}")
    elif isinstance(preset_value, list):
        assert len(preset_value) == len(resolved_value), where
        for i, (a, b) in enumerate(zip(preset_value, resolved_value)):
            _same(a, b, key, f"{where}[{i}]")
    elif key in PATH_PARAMS and isinstance(preset_value, str):
        assert os.path.abspath(preset_value) == resolved_value, where
    elif isinstance(preset_value, float) and math.isnan(preset_value):
        assert math.isnan(resolved_value), where
    else:
        assert resolved_value == preset_value and type(resolved_value) is type(preset_value), \
            f"{where}: preset {preset_value!r} -> resolved {resolved_value!r}"


@pytest.mark.parametrize("name", presets.available())
def test_every_preset_value_reaches_the_resolved_config(name, tmp_path):
    """The whole kind of the dropped-weights fault: nothing a preset sets is lost or overridden."""
    staged = stage_kernels(tmp_path / "stage", "alice", name, REPO / "notebooks", REPO / "kernel-metadata",
                           KaggleRoots(str(tmp_path / "in"), str(tmp_path / "work"), str(tmp_path / "tmp")))
    baked = {k.key.split("#")[0]: _cell_values(parameters_cell(nbformat.read(k.folder / k.meta["code_file"],
                                                                             as_version=4)).source)
             for k in staged}  # by kernel key: a preset's stages run one notebook several times
    preset = presets.notebook_params(name)
    assert list(baked) == list(preset)
    params = {kk: {k: v for k, v in values.items() if k in preset[kk]} for kk, values in baked.items()}
    resolved = check(params)
    for kk, values in params.items():
        for key, value in values.items():
            _same(value, lookup(resolved[kk], TARGETS[notebook_of(kk)][key]), key, f"{name}/{kk}/{key}")


@pytest.mark.parametrize("name", ["first_place", "seed_recipe"])
def test_vit_h_presets_keep_their_pretrained_weights(name, tmp_path):
    """Regression: notebook 02 once merged a top-level `backbone_weights = ""` over the preset's model."""
    staged = stage_kernels(tmp_path, "alice", name, REPO / "notebooks", REPO / "kernel-metadata")
    train = next(k for k in staged if k.notebook == "02_train_tpu")
    cell = parameters_cell(nbformat.read(train.folder / "02_train_tpu.ipynb", as_version=4)).source
    assert "backbone_weights" not in {t.id for n in ast.parse(cell).body if isinstance(n, ast.Assign)
                                      for t in n.targets}
    resolved = check({"02_train_tpu": _cell_values(cell)})["02_train_tpu"]
    assert resolved["model"]["backbone_weights"] == H14_LAION2B
    assert resolved["weights"]["source"] == "kaggle_model"
    assert "keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3" in train.meta["model_sources"]


@pytest.mark.parametrize("name", ["first_place", "seed_recipe"])
def test_products10k_is_attached_where_it_is_read(name, tmp_path):
    """Regression: the data-prep kernel read /kaggle/input/products-10k, which nothing attached."""
    staged = stage_kernels(tmp_path, "alice", name, REPO / "notebooks", REPO / "kernel-metadata")
    prep = staged[0]
    assert "alice/products-10k" in prep.meta["dataset_sources"]
    cell = _cell_values(parameters_cell(nbformat.read(prep.folder / "01_data_prep.ipynb", as_version=4)).source)
    mounts = {s.split("/")[-1] for s in prep.meta["dataset_sources"] + prep.meta["competition_sources"]}
    for source in cell["sources"]:
        assert source["root"].startswith("/kaggle/input/")
        assert source["root"].split("/")[3] in mounts, source


def test_a_nested_key_nothing_knows_fails_at_staging(tmp_path):
    with pytest.raises(ValueError, match=r"02_train_tpu: unknown training parameter\(s\) \['epochz'\]"):
        stage_kernels(tmp_path, "alice", "demo", REPO / "notebooks", REPO / "kernel-metadata",
                      overrides={"02_train_tpu": {"train": {"epochz": 3}}})
    with pytest.raises(ValueError, match=r"01_data_prep: .*unknown key\(s\) \['max_clases'\]"):
        stage_kernels(tmp_path, "alice", "demo", REPO / "notebooks", REPO / "kernel-metadata",
                      overrides={"01_data_prep": {"sources": [{"kind": "gldv2", "root": "/x", "max_clases": 3}]}})


def test_a_top_level_typo_fails_at_staging_listing_the_parameters(tmp_path):
    with pytest.raises(ValueError, match=r"02_train_tpu: unknown parameter\(s\) \['trian'\]; the notebook takes "
                                         r"\['data_dir', 'out_dir', .*'train'"):
        stage_kernels(tmp_path, "alice", "demo", REPO / "notebooks", REPO / "kernel-metadata",
                      overrides={"02_train_tpu": {"trian": {"epochs": 3}}})


def test_papermill_injected_names_are_checked_against_the_notebook():
    from guie_nb.params import injected_names, refuse_unknown_parameters

    setup, cell = "import os\nx = 1\n", 'data_dir = "a"\ntrain = {}\n'
    # papermill's own injection text (PythonTranslator.codify), with its inject-paths names
    injected = "# Parameters\ntrian = {\"epochs\": 3}\ndata_dir = \"b\"\nPAPERMILL_INPUT_PATH = \"in.ipynb\"\n"
    assert injected_names(["", setup, cell, injected]) == ["trian", "data_dir"]
    with pytest.raises(ValueError, match=r"02_train_tpu: papermill injected parameter\(s\) \['trian'\] that the "
                                         r"notebook does not have; its parameters are \[.*'train'"):
        refuse_unknown_parameters("02_train_tpu", ["", setup, cell, injected])
    refuse_unknown_parameters("02_train_tpu", ["", setup, cell, "# Parameters\ntrain = {}\ndry_run = True\n"])
    refuse_unknown_parameters("02_train_tpu", ["", setup, cell])  # nothing injected (baked, nbmake, Kaggle)
    refuse_unknown_parameters("02_train_tpu")  # outside IPython: nothing to check
    with pytest.raises(ValueError, match="unknown notebook"):
        refuse_unknown_parameters("02_train", [])


def test_papermill_by_hand_with_a_typo_stops_before_any_work(tmp_path):
    """`papermill -p expor_dir ...` (a typo) only warns in papermill; the notebook itself stops."""
    papermill = pytest.importorskip("papermill")
    from guie_nb.notebook_build import build_notebook, use_for_papermill, write_notebook

    notebook = write_notebook(build_notebook(REPO / "notebooks" / "05_submit.py"), tmp_path / "05_submit.ipynb")
    use_for_papermill()
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with pytest.raises(papermill.PapermillExecutionError, match=r"papermill injected parameter\(s\) "
                                                                    r"\['expor_dir'\]"):
            papermill.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                                       parameters={"expor_dir": str(tmp_path / "x"), "dry_run": True},
                                       cwd=str(tmp_path), progress_bar=False, log_output=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert not list(tmp_path.glob("**/resolved_config.json"))  # stopped before resolving


@pytest.mark.parametrize("notebook, name", [("01_data_prep", "dry_run"), ("02_train_tpu", "dry_run"),
                                            ("04_export", "flip_tta"), ("05_submit", "dry_run")])
@pytest.mark.parametrize("value", ["false", "False", 0, 1, None])
def test_a_flag_that_is_not_a_bool_is_refused(tmp_path, notebook, name, value):
    """`papermill -p dry_run false` injects the string "false", which `if dry_run:` reads as True."""
    from guie_nb.params import resolve

    base = {"01_data_prep": {"sources": [{"kind": "gldv2", "root": str(tmp_path)}], "out_dir": str(tmp_path / "d")},
            "02_train_tpu": {"data_dir": str(tmp_path / "d"), "out_dir": str(tmp_path / "t"),
                             "model": {"backbone": "demo-tiny"}, "train": {}},
            "04_export": {"data_dir": str(tmp_path / "d"), "out_dir": str(tmp_path / "e"),
                          "model_dir": str(tmp_path / "t")},
            "05_submit": {"export_dir": str(tmp_path / "e"), "out_dir": str(tmp_path / "s")}}[notebook]
    with pytest.raises(ValueError, match=rf"{name} must be True or False, got {value!r}"):
        resolve(notebook, {**base, name: value}, **({"model_config": {"backbone": "demo-tiny"}}
                                                    if notebook == "04_export" else {}))
    for ok in (True, False):
        resolved = resolve(notebook, {**base, name: ok}, **({"model_config": {"backbone": "demo-tiny"}}
                                                            if notebook == "04_export" else {}))
        assert lookup(resolved, TARGETS[notebook][name]) is ok
