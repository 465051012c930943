"""Checks on what the demo chain produced (the nbmake items run first, see conftest.py)."""

from __future__ import annotations

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
