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

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.kaggle.layout import INPUT_ENV, KaggleRoots
from guie_nb.kaggle.stage import build_helper_dataset, stage_kernels

REPO = Path(__file__).resolve().parents[1]


def test_staged_notebook_imports_guie_nb_from_the_dataset(tmp_path, monkeypatch):
    roots = KaggleRoots(str(tmp_path / "input"), str(tmp_path / "working"), str(tmp_path / "temp"))
    # the helper dataset as Kaggle serves it: guie_nb.zip (client dir mode "zip") unpacked
    ds = build_helper_dataset(tmp_path / "upload", "alice")
    archive = shutil.make_archive(str(tmp_path / "guie_nb"), "zip", ds / "guie_nb")
    mounted = Path(roots.input) / "guie-nb-helpers"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(mounted / "guie_nb")
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
    manifest = json.loads((Path(roots.working) / "data" / "manifest.json").read_text())
    assert manifest["num_classes"] == 12 - 2 * 2  # 6 + 6 classes, 2 per source held out for validation
