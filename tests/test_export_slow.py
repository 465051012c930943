"""Full size: a random-init ViT-H-14 exported in both formats and verified in the scorer runtimes
(2.5 GB of weights: the TF 2.6.4 SavedModel and the torch 1.11 TorchScript file both load)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from _export_helpers import run_export_cli

PROBES = "tiny_1x1,wide_60x1600,cmyk_240x320,huge_3000x4000"


@pytest.fixture(scope="module")
def vit_h_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit-h-14")
    code = ("import guie_nb, pathlib, sys; sys.path.insert(0, sys.argv[2]); from _export_helpers import "
            "save_demo_model; save_demo_model(pathlib.Path(sys.argv[1]), backbone='ViT-H-14')")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", code, str(folder), os.path.dirname(__file__)], check=True, env=env)
    return folder


@pytest.mark.slow
# TorchScript (the 2.5 GB file torch 1.11 must load) in `make test`; the SavedModel, which the
# demo-size exports cover in TF 2.6.4 too, in `make test-extended`
@pytest.mark.parametrize("fmt", [pytest.param("saved_model", marks=pytest.mark.extended), "torchscript"])
def test_vit_h_14_export_verified(vit_h_dir, tmp_path, fmt):
    out = tmp_path / "submission.zip"
    proc, report = run_export_cli(vit_h_dir, fmt, out, "--probes", PROBES, "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 2.4e9  # 632 M float32 weights
    assert report["ok"] and report["embedding_dim"] == 64 and report["min_cosine"] >= 0.9999
    assert len(report["per_image"]) == len(PROBES.split(","))
    print(f"ViT-H-14 {fmt}: {report['per_image_seconds']:.2f} s/image in {report['runtime']}, "
          f"estimate {report['scoring_hours_estimate']:.1f} h on this CPU")
