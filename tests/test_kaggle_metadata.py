"""Kernel metadata validation, Kaggle path placement and staging: no network involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.layout import KaggleRoots, kaggle_params
from guie_nb.kaggle.stage import build_helper_dataset, chain_metadata, stage_kernels
from guie_nb.notebook_build import NOTEBOOK_ORDER, parameters_cell

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "kernel-metadata"
SLUGS = {"01_data_prep": "guie-nb-01-data-prep", "02_train_tpu": "guie-nb-02-train-tpu",
         "03_finetune": "guie-nb-03-finetune", "04_export": "guie-nb-04-export", "05_submit": "guie-nb-05-submit"}


def good_meta(**changes) -> dict:
    meta = md.fill_owner(md.load_template(TEMPLATES / "02_train_tpu.json"), "alice")
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def test_templates_describe_the_chain():
    metas = chain_metadata(TEMPLATES, "alice")
    assert [m["id"] for m in metas.values()] == [f"alice/{SLUGS[nb]}" for nb in NOTEBOOK_ORDER]
    for nb, m in metas.items():
        assert md.flag(m, "is_private") is True and m["kernel_type"] == "notebook" and m["language"] == "python"
        if nb != "01_data_prep":  # data-prep reads only raw data, attached by staging from the preset
            assert m["competition_sources"][0] == "google-universal-image-embedding"
        assert "alice/guie-nb-helpers" in m["dataset_sources"]
        assert "docker_image" not in m
    assert metas["02_train_tpu"]["machine_shape"] == metas["03_finetune"]["machine_shape"] == "TpuV5E8"
    assert "machine_shape" not in metas["01_data_prep"] and "machine_shape" not in metas["04_export"]
    # raw data and backbone weights are attached by staging, from what the preset's parameters read
    # (tests/test_params.py): the templates list only what every preset needs
    assert all(m["model_sources"] == [] for m in metas.values())
    assert metas["01_data_prep"]["competition_sources"] == ["google-universal-image-embedding"]
    # only the export kernel goes online: it installs the scorer runtimes (Python 3.9, TF 2.6.4 /
    # torch 1.11) to verify the submission; the TPU kernels read attached data and models; the submitted kernel (05) copies the verified zip offline
    assert [nb for nb, m in metas.items() if md.flag(m, "enable_internet")] == ["04_export"]
    assert metas["04_export"]["kernel_sources"][-1] == "alice/guie-nb-03-finetune"
    assert metas["05_submit"]["kernel_sources"] == ["alice/guie-nb-04-export"]
    assert md.flag(metas["05_submit"], "enable_internet") is False and "machine_shape" not in metas["05_submit"]


@pytest.mark.parametrize("changes, problem", [
    ({"id": "alice/abc"}, "5 to 50 characters"),
    ({"id": "alice/Guie_Train"}, "lowercase"),
    ({"id": "guie-nb-02-train-tpu"}, "owner/slug"),
    ({"title": "GUIE nb two"}, "resolves to slug"),
    ({"title": "abc"}, "title must be 5 to 50"),
    ({"machine_shape": "TpuV38"}, "retired"),
    ({"machine_shape": "Tpu1VmV38"}, "retired; use 'TpuV5E8'"),
    ({"docker_image": "gcr.io/kaggle-gpu-images/python@sha256:0"}, "must not pin docker_image"),
    ({"enable_tpu": False}, "needs enable_tpu true"),
    ({"dataset_sources": ["guie-nb-helpers"]}, "dataset_sources"),
    ({"kernel_sources": ["alice/x/y"]}, "kernel_sources"),
    ({"competition_sources": ["owner/google-universal-image-embedding"]}, "competition_sources"),
    ({"model_sources": ["keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k"]}, "model_sources"),
    ({"model_sources": ["keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/latest"]}, "version number"),
    ({"is_private": "yes"}, "is_private must be true or false"),
    ({"enable_internet": "maybe"}, "enable_internet must be true or false.*got 'maybe'"),
    ({"enable_tpu": 1}, "enable_tpu must be true or false"),
    ({"enable_gpu": "true"}, "needs enable_tpu true and enable_gpu false"),
    ({"machine_shape": "TpuV6E8", "enable_tpu": "false"}, "machine_shape TpuV6E8 needs enable_tpu true"),
    ({"machine_shape": None, "enable_gpu": True}, "enable_gpu and enable_tpu are both true"),
    ({"machine_shape": None, "docker_image": "gcr.io/kaggle-gpu-images/python"}, "must not pin docker_image"),
    ({"code_file": "02_train_tpu.py"}, ".ipynb"),
    ({"language": "r"}, "language"),
    ({"machine_shape": "NvidiaTeslaT4"}, "needs enable_gpu true"),
    ({"kernal_sources": []}, "unknown key"),
])
def test_validation_names_the_problem(changes, problem):
    with pytest.raises(md.MetadataError, match=problem):
        md.validate(good_meta(**changes))


@pytest.fixture
def kaggle_api_class():
    """The client's KaggleApi class, imported without `kaggle/__init__.py` (which authenticates)."""
    import importlib
    import importlib.util
    import sys
    import types

    before = set(sys.modules)
    package = types.ModuleType("kaggle")
    package.__path__ = importlib.util.find_spec("kaggle").submodule_search_locations
    saved = sys.modules.get("kaggle")
    sys.modules["kaggle"] = package
    try:
        yield importlib.import_module("kaggle.api.kaggle_api_extended").KaggleApi
    finally:
        for name in set(sys.modules) - before:
            if name == "kaggle" or name.startswith("kaggle."):
                del sys.modules[name]
        if saved is not None:
            sys.modules["kaggle"] = saved
        else:
            sys.modules.pop("kaggle", None)


def test_flags_are_read_as_the_kaggle_client_reads_them(kaggle_api_class):
    """kaggle 2.2.1 `KaggleApi.get_bool`: booleans, or "true"/"false" in any case; defaults if absent."""
    client_reads = kaggle_api_class.get_bool  # does not touch self: the client's own parser, offline
    for value in (True, False, "true", "false", "True", "False", "TRUE", "fAlSe"):
        assert md.flag({"enable_gpu": value}, "enable_gpu") is client_reads(None, {"enable_gpu": value}, "enable_gpu",
                                                                             False)
    for key, default in md.FLAG_DEFAULTS.items():
        assert md.flag({}, key) is client_reads(None, {}, key, default) is default
    for value in ("yes", "no", "1", "", " true", 1, 0, None, [True]):
        with pytest.raises(md.MetadataError, match="enable_internet must be true or false"):
            md.flag({"enable_internet": value}, "enable_internet")
        with pytest.raises((ValueError, TypeError)):  # the client refuses them too
            client_reads(None, {"enable_internet": value}, "enable_internet", True)
    with pytest.raises(KeyError, match="not a boolean kernel-metadata key"):
        md.flag({}, "enable_gpus")


@pytest.mark.parametrize("changes, shown", [
    ({"enable_gpu": "false", "enable_tpu": "True"}, "TpuV5E8"),  # the client's init template writes strings
    ({"machine_shape": None, "enable_tpu": "false", "enable_gpu": True}, "GPU (Kaggle's default shape)"),
    ({"machine_shape": "NvidiaTeslaT4", "enable_tpu": False, "enable_gpu": "true"}, "NvidiaTeslaT4"),
    ({"machine_shape": None, "enable_tpu": "false", "enable_gpu": "false", "is_private": "False",
      "enable_internet": "TRUE"}, "CPU"),
])
def test_what_the_client_accepts_is_valid(changes, shown):
    assert md.validate(good_meta(**changes)) == []
    assert md.accelerator(good_meta(**changes)) == shown


@pytest.mark.parametrize("changes, warning", [
    ({"machine_shape": "TpuV6E8"}, "machine_shape 'TpuV6E8' is not one this validator knows"),
    ({"machine_shape": "NvidiaH200", "enable_tpu": False, "enable_gpu": True}, "'NvidiaH200' is not one"),
    ({"machine_shape": "BigGpu", "enable_tpu": False}, "neither Tpu... nor Nvidia..."),
    ({"machine_shape": None}, "enable_tpu without a machine_shape: Kaggle picks the TPU"),
])
def test_shapes_the_client_passes_on_unchecked_are_warnings(changes, warning):
    warnings = md.validate(good_meta(**changes))
    assert len(warnings) == 1 and warnings[0].startswith("alice/guie-nb-02-train-tpu: ")
    assert warning in warnings[0]


def test_staging_carries_warnings_and_the_cli_prints_them(tmp_path, capsys):
    from guie_nb.kaggle.cli import push_main

    tdir = tmp_path / "templates"
    tdir.mkdir()
    for nb in NOTEBOOK_ORDER:
        meta = json.loads((TEMPLATES / f"{nb}.json").read_text())
        if nb == "03_finetune":
            meta.update(machine_shape="TpuV6E8", enable_tpu="true", enable_gpu="false")
        (tdir / f"{nb}.json").write_text(json.dumps(meta))
    staged = stage_kernels(tmp_path / "out", "alice", "demo", REPO / "notebooks", tdir)
    assert [len(k.warnings) for k in staged] == [0, 0, 1, 0, 0] and "TpuV6E8" in staged[2].warnings[0]
    assert push_main(["--owner", "alice", "--out", str(tmp_path / "cli"), "--metadata-dir", str(tdir),
                      "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "alice/guie-nb-03-finetune, TpuV6E8, internet off" in out and "alice/guie-nb-01-data-prep, CPU, internet off" in out
    assert "warning: alice/guie-nb-03-finetune: machine_shape 'TpuV6E8' is not one" in err


def test_validation_reports_every_problem_and_unfilled_owner():
    meta = md.load_template(TEMPLATES / "02_train_tpu.json")  # owner not filled in
    with pytest.raises(md.MetadataError) as err:
        md.validate({**meta, "machine_shape": "TpuV38", "title": "x"})
    msg = str(err.value)
    assert "{owner} placeholder" in msg and "retired" in msg and "title" in msg
    with pytest.raises(md.MetadataError, match="invalid Kaggle owner"):
        md.fill_owner(meta, "no/slash")


def test_kaggle_params_place_outputs_and_earlier_kernels():
    roots = KaggleRoots("/kaggle/input", "/kaggle/working", "/kaggle/temp")
    params, deps, _ = kaggle_params("demo", SLUGS, roots=roots)
    assert params["01_data_prep"]["out_dir"] == "/kaggle/working/data"
    assert params["01_data_prep"]["demo_data_dir"] == "/kaggle/temp/raw"
    assert params["01_data_prep"]["sources"][0]["root"] == "/kaggle/temp/raw/products10k"
    assert params["02_train_tpu"]["data_dir"] == "/kaggle/input/guie-nb-01-data-prep/data"
    assert params["02_train_tpu"]["out_dir"] == "/kaggle/working/train"
    assert params["03_finetune"]["init_dir"] == "/kaggle/input/guie-nb-02-train-tpu/train"
    assert params["04_export"]["model_dir"] == "/kaggle/input/guie-nb-03-finetune/finetune"
    assert params["04_export"]["out_dir"] == "/kaggle/working"
    assert deps == {"01_data_prep": set(), "02_train_tpu": {"01_data_prep"},
                    "03_finetune": {"01_data_prep", "02_train_tpu"},
                    "04_export": {"01_data_prep", "02_train_tpu", "03_finetune"}, "05_submit": {"04_export"}}
    # the submitted kernel writes submission.zip at the top of its output, where the competition takes it
    assert params["05_submit"] == {"export_dir": "/kaggle/input/guie-nb-04-export", "out_dir": "/kaggle/working"}
    moved, _, _ = kaggle_params("demo", SLUGS, roots=KaggleRoots("/tmp/in", "/tmp/work", "/tmp/scratch"))
    assert moved["02_train_tpu"]["data_dir"] == "/tmp/in/guie-nb-01-data-prep/data"


def test_kaggle_params_real_raw_data_needs_its_dataset(monkeypatch):
    from guie_nb.presets import demo

    original = demo.notebook_params

    def real(root):  # the demo preset, reading existing raw data instead of generating it
        p = original(root)
        p["01_data_prep"]["demo_data_dir"] = None
        return p

    monkeypatch.setattr(demo, "notebook_params", real)
    with pytest.raises(ValueError, match="needs a dataset with slug 'products10k'"):
        kaggle_params("demo", SLUGS, roots=KaggleRoots())
    params, _, _ = kaggle_params("demo", SLUGS, {"01_data_prep": {"products10k", "gldv2"}}, KaggleRoots())
    assert params["01_data_prep"]["sources"][1]["root"] == "/kaggle/input/gldv2"


def test_stage_bakes_kaggle_paths_and_writes_valid_metadata(tmp_path):
    staged = stage_kernels(tmp_path, "alice", "demo", REPO / "notebooks", TEMPLATES, KaggleRoots())
    assert [k.folder.name for k in staged] == [SLUGS[nb] for nb in NOTEBOOK_ORDER]
    for k in staged:
        meta = json.loads((k.folder / "kernel-metadata.json").read_text())
        assert meta == k.meta and meta["id"] == f"alice/{k.folder.name}"
        md.validate(meta, k.folder)
        nb = json.loads((k.folder / meta["code_file"]).read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        text = "".join(nb["cells"][1]["source"]) + "".join(nb["cells"][2]["source"])
        assert "guie-nb-helpers" in text  # the bootstrap cell comes first
    import nbformat

    train = nbformat.read(staged[1].folder / "02_train_tpu.ipynb", as_version=4)
    assert 'data_dir = "/kaggle/input/guie-nb-01-data-prep/data"' in parameters_cell(train).source
    assert 'out_dir = "/kaggle/working/train"' in parameters_cell(train).source


def test_staged_kernel_sources_are_what_each_kernel_reads(tmp_path):
    """The chain's kernel_sources come from the paths each kernel reads (so a stage or a left-out
    notebook cannot leave a stale mount); a template's other kernels are kept; the templates must
    still chain."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    for nb in NOTEBOOK_ORDER:
        (tdir / f"{nb}.json").write_text((TEMPLATES / f"{nb}.json").read_text())
    meta = json.loads((tdir / "04_export.json").read_text())
    meta["kernel_sources"] = ["{owner}/guie-nb-03-finetune", "bob/some-other-kernel"]  # 04 also reads 01, 02
    (tdir / "04_export.json").write_text(json.dumps(meta))
    staged = {k.key: k for k in stage_kernels(tmp_path / "out", "alice", "demo", REPO / "notebooks", tdir)}
    assert staged["04_export"].meta["kernel_sources"] == [
        "alice/guie-nb-01-data-prep", "alice/guie-nb-02-train-tpu", "alice/guie-nb-03-finetune",
        "bob/some-other-kernel"]
    assert staged["05_submit"].meta["kernel_sources"] == ["alice/guie-nb-04-export"]
    meta["kernel_sources"] = []
    (tdir / "04_export.json").write_text(json.dumps(meta))
    with pytest.raises(md.MetadataError, match="must chain to 'alice/guie-nb-03-finetune'"):
        chain_metadata(tdir, "alice")


def test_helper_dataset_holds_the_package(tmp_path):
    import guie_nb

    out = build_helper_dataset(tmp_path / "ds", "alice")
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/guie-nb-helpers" and md.slugify_title(meta["title"]) == "guie-nb-helpers"
    pkg = Path(guie_nb.__file__).parent
    expected = {str(f.relative_to(pkg)) for f in pkg.rglob("*.py") if "__pycache__" not in f.parts}
    assert {str(f.relative_to(out / "guie_nb")) for f in (out / "guie_nb").rglob("*.py")} == expected
    assert not list(out.rglob("__pycache__"))
    version = json.loads((out / "guie_nb_version.json").read_text())
    assert version["version"] == guie_nb.__version__ and len(version["sha256"]) == 64


def test_restaging_removes_kernel_folders_it_did_not_write(tmp_path):
    """demo_stages, then demo into the same folder: the stage kernels demo does not have are gone;
    the chain state, the helper dataset and the user's own files stay."""
    first = {k.folder.name for k in stage_kernels(tmp_path, "alice", "demo_stages", REPO / "notebooks", TEMPLATES)}
    build_helper_dataset(tmp_path / "guie-nb-helpers", "alice")
    (tmp_path / "chain_state.json").write_text("{}")
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "log.txt").write_text("kept")
    (tmp_path / "notes").mkdir()
    second = {k.folder.name for k in stage_kernels(tmp_path, "alice", "demo", REPO / "notebooks", TEMPLATES)}
    assert first - second, "demo_stages should stage kernels that demo does not"
    kernels = {d.name for d in tmp_path.iterdir() if (d / "kernel-metadata.json").is_file()}
    assert kernels == second
    for kept in ("chain_state.json", "chain/log.txt", "notes", "guie-nb-helpers/dataset-metadata.json"):
        assert (tmp_path / kept).exists(), kept


def test_a_preset_stages_its_heavy_export_on_a_gpu(tmp_path):
    """first_place's export (the held-out scoring of a 290 px stride-12 ViT-H-14) runs on a T4 kernel;
    its training kernels keep the template's TPU; zero_shot's export stays on a CPU kernel."""
    from guie_nb import presets

    assert presets.kernel_machines("first_place") == {"04_export": "NvidiaTeslaT4"}
    staged = {k.key: k.meta for k in stage_kernels(tmp_path / "a", "alice", "first_place", REPO / "notebooks",
                                                   TEMPLATES, KaggleRoots())}
    export = staged["04_export"]
    assert (export["machine_shape"], md.flag(export, "enable_gpu"), md.flag(export, "enable_tpu")) == \
        ("NvidiaTeslaT4", True, False)
    assert md.flag(export, "enable_internet")  # the scorer runtimes' pip installs
    assert all(m["machine_shape"] == "TpuV5E8" for k, m in staged.items() if k.startswith(("02_", "03_")))
    zero = {k.key: k.meta for k in stage_kernels(tmp_path / "b", "alice", "zero_shot", REPO / "notebooks",
                                                 TEMPLATES, KaggleRoots())}
    assert md.accelerator(zero["04_export"]) == "CPU"


def test_a_machine_is_checked_before_it_is_staged(monkeypatch):
    from guie_nb import presets
    from guie_nb.presets import demo

    with pytest.raises(md.MetadataError, match="retired; use 'TpuV5E8'"):
        md.on_machine({}, "TpuV38")
    with pytest.raises(md.MetadataError, match="'NvidiaA100' is not one of"):
        md.on_machine({}, "NvidiaA100")
    assert md.on_machine({"enable_gpu": True}, "TpuV5E8") == {"machine_shape": "TpuV5E8", "enable_gpu": False,
                                                               "enable_tpu": True}
    monkeypatch.setattr(demo, "KERNEL_MACHINES", {"04_exprot": "NvidiaTeslaT4"}, raising=False)
    with pytest.raises(ValueError, match=r"KERNEL_MACHINES names \['04_exprot'\]"):
        presets.kernel_machines("demo")
