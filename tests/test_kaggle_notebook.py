"""A staged kernel runs in a simulated Kaggle layout and imports guie_nb from the helper dataset.

The Kaggle roots are moved into a temporary folder (GUIE_KAGGLE_INPUT etc., honoured by staging
and by the notebooks' bootstrap cell); the helper dataset is unpacked where Kaggle mounts it
(/kaggle/input/guie-nb-helpers/guie_nb), from the zip the `kaggle` client would upload. The staged
data-prep notebook then runs under papermill on a tiny raw dataset mounted beside it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import papermill
import pytest

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.kaggle.layout import INPUT_ENV, KaggleRoots
from guie_nb.kaggle.stage import build_helper_dataset, stage_kernels

REPO = Path(__file__).resolve().parents[1]


def test_staged_notebook_imports_guie_nb_from_the_dataset(tmp_path, monkeypatch):
    roots = KaggleRoots(str(tmp_path / "input"), str(tmp_path / "working"), str(tmp_path / "temp"))
    # the helper dataset as Kaggle serves it: guie_nb.zip (client dir mode "zip") unpacked, and
    # guie_nb_version.json beside it, which the bootstrap cell checks against the staged hash
    mounted = _mount_helpers(tmp_path, roots)
    # a tiny raw dataset instead of the demo generator's full one (keeps the run short)
    raw = write_demo_sources(Path(roots.input) / "guie-demo-raw",
                             DemoSpec(products_classes=6, landmark_classes=6, views_per_class=3))
    sources = [{"kind": kind, "root": str(path), "val_classes": 2, "queries_per_class": 1}
               for kind, path in raw.items()]
    staged = stage_kernels(tmp_path / "stage", "alice", "demo", REPO / "notebooks", REPO / "kernel-metadata",
                           roots, overrides={"01_data_prep": {"sources": sources, "demo_data_dir": None,
                                                              "images_per_shard": 20}})
    notebook = staged[0].folder / "01_data_prep.ipynb"

    monkeypatch.setenv(INPUT_ENV, roots.input)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(notebook), str(out), kernel_name="python3", cwd=str(tmp_path),
                               progress_bar=False, log_output=False)

    printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"guie_nb 0.1.0 from {mounted / 'guie_nb'}\n" in printed, printed[:2000]
    assert "helper package" in printed and "checked" in printed
    manifest = json.loads((Path(roots.working) / "data" / "manifest.json").read_text())
    assert manifest["num_classes"] == 12 - 2 * 2  # 6 + 6 classes, 2 per source held out for validation


def _mount_helpers(tmp_path, roots: KaggleRoots, tamper=None) -> Path:
    ds = build_helper_dataset(tmp_path / "upload", "alice")
    archive = shutil.make_archive(str(tmp_path / "guie_nb"), "zip", ds / "guie_nb")
    mounted = Path(roots.input) / "guie-nb-helpers"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(mounted / "guie_nb")
    shutil.copy(ds / "guie_nb_version.json", mounted / "guie_nb_version.json")
    if tamper:
        tamper(mounted)
    return mounted


def _run_submit_kernel(tmp_path, monkeypatch, tamper=None, helpers_sha256=None):
    from guie_nb.kaggle.fixtures import export_output
    from guie_nb.kaggle.layout import TEMP_ENV, WORKING_ENV

    roots = KaggleRoots(str(tmp_path / "input"), str(tmp_path / "working"), str(tmp_path / "temp"))
    _mount_helpers(tmp_path, roots, tamper)
    export_output(Path(roots.input) / "guie-nb-04-export", run_id="run-of-04")  # the export kernel's output
    staged = stage_kernels(tmp_path / "stage", "alice", "demo", REPO / "notebooks", REPO / "kernel-metadata",
                           roots, run_tag="t1", helpers_sha256=helpers_sha256)
    notebook = staged[-1].folder / "05_submit.ipynb"
    for var, value in ((INPUT_ENV, roots.input), (WORKING_ENV, roots.working), (TEMP_ENV, roots.temp)):
        monkeypatch.setenv(var, value)
    papermill.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False, log_output=False)
    return Path(roots.working)


def test_staged_submit_kernel_hands_over_the_verified_zip(tmp_path, monkeypatch):
    from guie_nb.export.handoff import check_zip_against

    working = _run_submit_kernel(tmp_path, monkeypatch)
    report = json.loads((working / "submit_report.json").read_text())
    assert report["run_id"] == "t1-05_submit" and report["export_run_id"] == "run-of-04" and report["passed"]
    check_zip_against(working / "submission.zip", report)  # at the top of the output, as submitted
    marker = json.loads((working / "guie_run.json").read_text())
    assert marker["run_id"] == "t1-05_submit" and marker["notebook"] == "05_submit"


@pytest.mark.parametrize("tamper, helpers_sha256, reason", [
    (None, "0" * 64, "but this notebook was staged with 000000000000"),  # an older dataset version attached
    (lambda m: (m / "guie_nb" / "metrics.py").unlink(), None, "the dataset upload was incomplete or altered"),
    (lambda m: (m / "guie_nb_version.json").unlink(), None, "has no guie_nb_version.json beside it"),
])
def test_a_helper_package_other_than_the_staged_one_stops_the_kernel(tmp_path, monkeypatch, tamper, helpers_sha256,
                                                                     reason):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run_submit_kernel(tmp_path, monkeypatch, tamper, helpers_sha256)
    assert err.value.ename == "HelperMismatch" and reason in err.value.evalue, err.value.evalue
    assert not (tmp_path / "working" / "guie_run.json").exists()  # no run marker: the run never counts
