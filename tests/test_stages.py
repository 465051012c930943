"""Presets as chains of kernels: training stages stated as data become one kernel each, chained
(each stage's init_dir is the stage before's output, the export reads the last); presets may leave
the training notebooks out. Staging, the chain state and the local runner handle both."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import nbformat
import pytest

from guie_nb import presets
from guie_nb.kaggle.layout import KaggleRoots
from guie_nb.kaggle.stage import stage_kernels
from guie_nb.notebook_build import parameters_cell
from guie_nb.params import apply_model_changes, check
from guie_nb.stages import check_chain, notebook_of, stage_of

REPO = Path(__file__).resolve().parents[1]
ROOTS = KaggleRoots("/kaggle/input", "/kaggle/working", "/kaggle/temp")


def _baked(kernel) -> dict:
    namespace: dict = {}
    exec(parameters_cell(nbformat.read(kernel.folder / kernel.meta["code_file"], as_version=4)).source,
         {"float": float}, namespace)
    return namespace


def test_kernel_keys():
    assert (notebook_of("03_finetune:backbone-280"), stage_of("03_finetune:backbone-280")) == \
        ("03_finetune", "backbone-280")
    assert (notebook_of("01_data_prep#1"), stage_of("01_data_prep#1")) == ("01_data_prep", None)
    plain = ["01_data_prep", "02_train_tpu", "03_finetune", "04_export", "05_submit"]
    assert check_chain(plain) == plain
    assert check_chain(["01_data_prep", "04_export", "05_submit"])  # zero-shot: no training kernel
    assert check_chain(["01_data_prep", "02_train_tpu:a", "03_finetune:b", "03_finetune:c", "04_export", "05_submit"])
    # two branches: each 02 kernel starts a model of its own, the 03 kernels follow
    assert check_chain(["01_data_prep", "02_train_tpu:a", "02_train_tpu:b", "03_finetune:a2", "03_finetune:b2",
                        "04_export", "05_submit"])


@pytest.mark.parametrize("keys, message", [
    (["01_data_prep", "04_export"], r"05_submit must run exactly once"),
    (["02_train_tpu", "01_data_prep", "04_export", "05_submit"], "out of chain order"),
    (["01_data_prep", "03_finetune", "04_export", "05_submit"], "needs a 02_train_tpu kernel before it"),
    (["01_data_prep", "02_train_tpu", "02_train_tpu:b", "04_export", "05_submit"],
     "several 02_train_tpu kernels .* each need a stage name"),
    (["01_data_prep", "02_train_tpu:a", "03_finetune:b", "02_train_tpu:c", "04_export", "05_submit"],
     "out of chain order"),
    (["01_data_prep", "02_train_tpu:a", "03_finetune:a", "04_export", "05_submit"], "stage names must be unique"),
    (["01_data_prep", "02_train_tpu:Big_Stage", "04_export", "05_submit"], "lowercase letters, digits"),
    (["01_data_prep", "06_other", "04_export", "05_submit"], "'06_other' is not a notebook"),
    (["01_data_prep", "04_export:x", "05_submit"], "04_export must run exactly once, without a stage name"),
])
def test_broken_chains_are_refused_by_rule(keys, message):
    with pytest.raises(ValueError, match=message):
        check_chain(keys)


def test_a_stage_changes_only_what_keeps_the_weights_shapes():
    model = {"backbone": "demo-tiny", "embedding_dim": 64, "head": {"kind": "cosface", "margin": 0.55, "subcenters": 1}}
    changed = apply_model_changes(model, {"image_size": 80, "head": {"margin": 0.65}})
    assert changed == {**model, "image_size": 80, "head": {"kind": "cosface", "margin": 0.65, "subcenters": 1}}
    assert model["head"]["margin"] == 0.55  # not modified in place
    for bad, name in (({"embedding_dim": 32}, "embedding_dim"), ({"backbone": "ViT-B-16"}, "backbone"),
                      ({"head": {"subcenters": 3}}, "head.subcenters")):
        with pytest.raises(ValueError, match=rf"model_changes \['{name}'\]"):
            apply_model_changes(model, bad)


def test_each_stage_resolves_from_the_model_of_the_stage_before():
    resolved = check(presets.notebook_params("demo_stages", "/r"))
    assert list(resolved) == ["01_data_prep", "02_train_tpu:train-64", "03_finetune:backbone-80",
                              "03_finetune:products", "04_export", "05_submit"]
    sizes = [resolved[k]["model"]["image_size"] for k in list(resolved)[1:5]]
    assert sizes == [None, 80, 80, 80]  # 80 px from the second stage on, up to the export
    margins = [resolved[k]["model"]["head"]["margin"] for k in list(resolved)[1:5]]
    assert margins == [0.1, 0.1, 0.15, 0.15]
    assert resolved["03_finetune:products"]["train"]["train_sources"] == ["products10k"]
    assert resolved["03_finetune:backbone-80"]["train"]["freeze_head"] is True


def test_staging_pushes_one_kernel_per_stage_chained(tmp_path):
    staged = stage_kernels(tmp_path, "alice", "demo_stages", REPO / "notebooks", REPO / "kernel-metadata", ROOTS,
                           run_tag="T")
    by_key = {k.key: k for k in staged}
    assert list(by_key) == ["01_data_prep", "02_train_tpu:train-64", "03_finetune:backbone-80",
                            "03_finetune:products", "04_export", "05_submit"]
    slugs = {k.key: k.meta["id"].split("/")[1] for k in staged}
    assert slugs["02_train_tpu:train-64"] == "guie-nb-02-train-tpu-train-64"
    assert slugs["03_finetune:products"] == "guie-nb-03-finetune-products"
    assert by_key["03_finetune:backbone-80"].meta["title"] == "GUIE nb 03 finetune backbone 80"
    assert len(set(slugs.values())) == len(staged) and len({k.run_id for k in staged}) == len(staged)
    assert by_key["03_finetune:products"].run_id == "T-03_finetune-products"
    # each stage mounts data-prep and the stage before it, and starts from that stage's output
    ref = {key: f"alice/{slug}" for key, slug in slugs.items()}
    products = by_key["03_finetune:products"]
    assert products.meta["kernel_sources"] == [ref["01_data_prep"], ref["03_finetune:backbone-80"]]
    values = _baked(products)
    assert values["init_dir"] == "/kaggle/input/guie-nb-03-finetune-backbone-80/backbone-80"
    assert values["out_dir"] == "/kaggle/working/products"
    assert values["model_changes"] == {"head": {"margin": 0.15}}
    assert _baked(by_key["03_finetune:backbone-80"])["init_dir"] == \
        "/kaggle/input/guie-nb-02-train-tpu-train-64/train-64"
    export = _baked(by_key["04_export"])
    assert export["model_dir"] == "/kaggle/input/guie-nb-03-finetune-products/products"
    assert by_key["04_export"].meta["kernel_sources"] == [ref["01_data_prep"], ref["02_train_tpu:train-64"],
                                                        ref["03_finetune:products"]]
    assert [k.output_sub for k in staged] == ["data", "train-64", "backbone-80", "products", "", ""]


@pytest.fixture
def zero_shot_like(monkeypatch):
    """A preset without training kernels (the shape of wt-zeroshot's zero_shot: data-prep -> export
    -> submit); its export reads only the data-prep output."""
    module = types.ModuleType("guie_nb.presets.omits_training")

    def notebook_params(root):
        demo = presets.notebook_params("demo", root)
        return {"01_data_prep": demo["01_data_prep"],
                "04_export": {**demo["04_export"], "model_dir": f"{root}/data", "train_dir": f"{root}/data"},
                "05_submit": demo["05_submit"]}

    module.notebook_params = notebook_params
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(presets, "available", lambda: ["demo", "omits_training"])
    return "omits_training"


def test_a_preset_may_leave_the_training_notebooks_out(zero_shot_like, tmp_path):
    staged = stage_kernels(tmp_path, "alice", zero_shot_like, REPO / "notebooks", REPO / "kernel-metadata", ROOTS)
    assert [k.key for k in staged] == ["01_data_prep", "04_export", "05_submit"]
    export = next(k for k in staged if k.key == "04_export")
    assert export.meta["kernel_sources"] == ["alice/guie-nb-01-data-prep"]  # no mount of a kernel never pushed
    assert _baked(export)["data_dir"] == "/kaggle/input/guie-nb-01-data-prep/data"


def test_run_local_runs_each_kernel_in_chain_order(monkeypatch, tmp_path):
    """scripts/run_local.py runs one papermill job per kernel (the fine-tune notebook once per stage),
    each with its own values and executed notebook; --only takes a notebook or a kernel key."""
    import papermill

    sys.path.insert(0, str(REPO / "scripts"))
    import run_local

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda nb, out, parameters, **kw: calls.append((Path(nb).stem, Path(out).name, parameters)))
    root = str(tmp_path / "r")
    assert run_local.main(["--preset", "demo_stages", "--root", root]) == 0
    assert [(nb, out) for nb, out, _ in calls] == [
        ("01_data_prep", "01_data_prep.ipynb"), ("02_train_tpu", "02_train_tpu-train-64.ipynb"),
        ("03_finetune", "03_finetune-backbone-80.ipynb"), ("03_finetune", "03_finetune-products.ipynb"),
        ("04_export", "04_export.ipynb"), ("05_submit", "05_submit.ipynb")]
    assert calls[3][2]["init_dir"] == f"{root}/backbone-80" and calls[4][2]["model_dir"] == f"{root}/products"
    calls.clear()
    assert run_local.main(["--preset", "demo_stages", "--root", root, "--only", "03_finetune:products",
                           "04_export"]) == 0
    assert [out for _, out, _ in calls] == ["03_finetune-products.ipynb", "04_export.ipynb"]
    with pytest.raises(SystemExit):
        run_local.main(["--preset", "demo_stages", "--root", root, "--only", "03_finetune:nope"])


def test_branches_resolve_each_fine_tune_from_its_own_branch():
    """fourth_place trains two models: each fine-tune resolves from the run its init_dir names (not
    the training kernel just before it), and the export's model joins both branches' backbones."""
    params = presets.notebook_params("fourth_place", "/r")
    assert list(params) == ["01_data_prep", "02_train_tpu:vit-l14-336", "02_train_tpu:vit-h14",
                            "03_finetune:vit-l14-336-lowlr", "03_finetune:vit-h14-lowlr", "04_export", "05_submit"]
    resolved = check(params)
    assert resolved["03_finetune:vit-l14-336-lowlr"]["model"]["backbone"] == "ViT-L-14-336-quickgelu"
    assert resolved["03_finetune:vit-h14-lowlr"]["model"]["backbone"] == "ViT-H-14"
    assert resolved["03_finetune:vit-h14-lowlr"]["init"]["init_dir"] == "/r/vit-h14"
    export = resolved["04_export"]
    assert [p["model_dirs"] for p in export["export"]["concat"]["parts"]] == [
        ["/r/vit-l14-336", "/r/vit-l14-336-lowlr"], ["/r/vit-h14", "/r/vit-h14-lowlr"]]
    assert export["model"]["backbone"] == "ViT-L-14-336-quickgelu" and export["model"]["image_size"] is None
    assert export["model"]["extra_backbones"] == [{"backbone": "ViT-H-14", "backbone_weights": "", "image_size": 224}]
    assert presets.final_model("fourth_place")[0]["extra_backbones"] == export["model"]["extra_backbones"]


def test_staging_attaches_both_branches_to_the_export(tmp_path):
    """Each fine-tune kernel mounts its own branch's 02 kernel; the export mounts all four runs."""
    staged = {k.key: k for k in stage_kernels(tmp_path, "someone", "fourth_place", REPO / "notebooks",
                                              REPO / "kernel-metadata", ROOTS)}
    sources = {key: [r.split("/")[1] for r in k.meta["kernel_sources"]] for key, k in staged.items()}
    assert sources["03_finetune:vit-h14-lowlr"] == ["guie-nb-01-data-prep", "guie-nb-02-train-tpu-vit-h14"]
    assert sources["04_export"] == ["guie-nb-01-data-prep", "guie-nb-02-train-tpu-vit-l14-336",
                                    "guie-nb-02-train-tpu-vit-h14", "guie-nb-03-finetune-vit-l14-336-lowlr",
                                    "guie-nb-03-finetune-vit-h14-lowlr"]
    assert "keras/clip/keras/clip_vit_large_patch14_336/3" in staged["02_train_tpu:vit-l14-336"].meta["model_sources"]
