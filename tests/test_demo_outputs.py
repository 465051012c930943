"""Checks on what the demo chain produced (the nbmake items run first, see conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

DEMO_ROOT = os.environ.get("GUIE_DEMO_ROOT")
pytestmark = pytest.mark.skipif(
    not DEMO_ROOT, reason="GUIE_DEMO_ROOT unset: run through `make test`, which runs the notebooks")


def test_report_scores_and_submission():
    root = Path(DEMO_ROOT)
    report_path = root / "report.json"
    assert report_path.is_file(), f"the export notebook wrote no {report_path}"
    report = json.loads(report_path.read_text())
    assert report["embedding_dim"] == 64
    assert 0.0 <= report["map5_untrained"] <= 1.0
    assert report["map5_trained"] >= 2 * report["map5_untrained"], report
    assert report["max_abs_diff_vs_keras"] < 1e-4
    with zipfile.ZipFile(root / "submission.zip") as zf:
        names = zf.namelist()
    assert "saved_model.pb" in names, names
    assert all(not n.startswith(("/", "saved_model/")) for n in names), names


def test_data_prep_manifest():
    manifest = json.loads((Path(DEMO_ROOT) / "data" / "manifest.json").read_text())
    assert manifest["images_written"] > 0
    assert set(manifest["sources"]) == {"products10k", "gldv2"}
    assert manifest["skipped"] == []


# The pictures each notebook shows (image outputs, in this order) and saves (PNG under the demo root).
PICTURES = {
    "01_data_prep": ["data/samples.png", "data/class_counts.png"],
    "02_train_tpu": ["train/history.png"],
    "03_finetune": ["finetune/history.png"],
    "04_export": ["retrieval_examples.png", "map5_per_domain.png", "retrieval_worst.png"],
}


def executed_notebook(name: str):
    """The executed notebook: nbmake's (`make test` runs it with --overwrite, GUIE_DEMO_NOTEBOOKS
    names the folder), else papermill's under <root>/executed (`make demo`, scripts/run_local.py)."""
    import nbformat

    folder = Path(os.environ.get("GUIE_DEMO_NOTEBOOKS") or Path(DEMO_ROOT) / "executed")
    path = folder / f"{name}.ipynb"
    assert path.is_file(), f"no executed notebook {path}"
    return nbformat.read(path, as_version=4)


def outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG", img.format
        return img.size


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_each_picture_is_an_image_output_and_a_png_file(name):
    images = [o for o in outputs(executed_notebook(name)) if "image/png" in o.get("data", {})]
    assert len(images) == len(PICTURES[name]), f"{name}: {len(images)} image outputs, expected {PICTURES[name]}"
    for shown, rel in zip(images, PICTURES[name]):
        width, height = png_size(base64.b64decode(shown["data"]["image/png"]))
        assert width >= 300 and height >= 150, (name, rel, width, height)
        path = Path(DEMO_ROOT) / rel
        assert path.is_file(), f"{name} saved no {path}"
        width, height = png_size(path.read_bytes())
        assert width >= 300 and height >= 150, (path, width, height)


@pytest.mark.parametrize("name, epochs", [("02_train_tpu", 12), ("03_finetune", 3)])
def test_training_progress_is_whole_lines_per_epoch(name, epochs):
    text = "".join(o.get("text", "") for o in outputs(executed_notebook(name)) if o["output_type"] == "stream")
    assert "\r" not in text, f"{name}: carriage returns in the saved output"
    for epoch in range(1, epochs + 1):
        lines = [ln for ln in text.splitlines() if ln.startswith(f"epoch {epoch}/{epochs}: ") and "%|" in ln]
        assert lines and lines[-1].startswith(f"epoch {epoch}/{epochs}: 100%|"), (epoch, lines)
        assert all(" img/s, loss " in ln and ", lr " in ln for ln in lines), lines
        assert len(lines) <= 8, f"{name}: {len(lines)} progress lines for epoch {epoch}"


def test_data_prep_progress_is_whole_lines():
    streams = [o for o in outputs(executed_notebook("01_data_prep")) if o["output_type"] == "stream"]
    text = "".join(o.get("text", "") for o in streams)
    assert "\r" not in text, "01_data_prep: carriage returns in the saved output"
    lines = [ln for ln in text.splitlines() if ln.startswith("images: ") and "%|" in ln]
    assert lines and lines[-1].startswith("images: 100%|"), lines
    assert len(lines) <= 12, f"{len(lines)} progress lines"
