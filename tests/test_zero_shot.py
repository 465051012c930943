"""The zero-shot path: presets without training notebooks, notebook 04 building, fitting and
exporting a zero-shot model (run under papermill), and the soup source of the export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from guie_nb import presets
from guie_nb.notebook_build import build_all, build_notebook, check_parameters, use_for_papermill
from guie_nb.params import check, resolve_export

HERE = Path(__file__).parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _export_helpers import save_demo_model  # noqa: E402
from _training_helpers import make_small_data  # noqa: E402

NO_TRAINING = {"01_data_prep", "04_export", "05_submit"}


@pytest.mark.parametrize("name", ["zero_shot", "zero_shot_h14"])
def test_zero_shot_presets_have_no_training_and_resolve(name):
    params = presets.notebook_params(name, "build/x")
    assert set(params) == NO_TRAINING
    for nb_name, values in params.items():
        check_parameters(nbformat.from_dict(build_notebook(REPO / "notebooks" / f"{nb_name}.py")), values, nb_name)
    resolved = check(params)["04_export"]
    zs = resolved["export"]["zero_shot"]
    assert zs["reduction"] in ("pca", "whiten") and zs["sample_images"] > 64
    assert resolved["model"]["embedding_dim"] == 64 and resolved["model"]["hidden_dim"] is None
    assert resolved["export"]["run_dir"] == str(Path("build/x/zero_shot").resolve())
    for nb_name in NO_TRAINING:  # every kernel of the chain is a CPU kernel
        meta = json.loads((REPO / "kernel-metadata" / f"{nb_name}.json").read_text())
        assert not meta.get("enable_gpu") and not meta.get("enable_tpu") and "machine_shape" not in meta


def test_the_export_takes_exactly_one_model_source(tmp_path):
    base = {"data_dir": tmp_path, "out_dir": tmp_path}
    zs = {"model": {"backbone": "demo-tiny"}, "reduction": "pca", "sample_images": 100}
    with pytest.raises(ValueError,
                       match=r"exactly one of model_dir, zero_shot, soup, concat .*\['model_dir', 'zero_shot'\]"):
        resolve_export(**base, model_dir=tmp_path, zero_shot=zs)
    with pytest.raises(ValueError, match="got none"):
        resolve_export(**base)
    with pytest.raises(ValueError, match=r"zero_shot.reduction must be one of \('pca', 'whiten'\), got 'lda'"):
        resolve_export(**base, zero_shot={**zs, "reduction": "lda"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sample_image'\]"):
        resolve_export(**base, zero_shot={"model": {"backbone": "demo-tiny"}, "sample_image": 10})
    with pytest.raises(ValueError, match="hidden_dim 256 would put an untrained layer between the backbone"):
        resolve_export(**base, zero_shot={**zs, "model": {"backbone": "demo-tiny", "hidden_dim": 256}})
    with pytest.raises(ValueError, match="soup.model_dirs must list at least 2"):
        resolve_export(**base, soup={"model_dirs": [tmp_path], "mode": "uniform"})
    with pytest.raises(ValueError, match=r"soup.mode must be one of \('uniform', 'greedy'\)"):
        resolve_export(**base, soup={"model_dirs": [tmp_path, tmp_path], "mode": "best"})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("zero-shot"))


def test_zero_shot_notebook_exports_the_fitted_model(data_dir, tmp_path):
    """Notebook 04 with a `zero_shot` section and no model_dir: it builds the model, fits whitening
    on 100 training images into `projection`, writes the run folder, exports (TorchScript,
    verified in PyTorch 1.11) and reports the random-projection baseline beside the submission."""
    built = build_all(REPO / "notebooks", tmp_path / "notebooks")
    notebook = next(p for p in built if p.stem == "04_export")
    out = tmp_path / "out"
    params = {"data_dir": str(data_dir), "model_dir": None, "train_dir": None, "out_dir": str(out),
              "export_format": "torchscript",
              "zero_shot": {"model": {"backbone": "demo-tiny", "embedding_dim": 64, "dropout": 0.0},
                            "reduction": "whiten", "sample_images": 100}}
    use_for_papermill()
    papermill.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), parameters=params, cwd=str(REPO),
                               kernel_name="python3", progress_bar=False, log_output=False)

    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "torchscript" and report["verified_in"] == "PyTorch 1.11.0"
    assert report["embedding_dim"] == 64 and report["min_cosine_vs_keras"] >= 0.9999
    assert report["reduction"]["kind"] == "whiten" and report["reduction"]["samples"] == 100
    assert 0.0 <= report["map5_untrained"] <= 1.0 and 0.0 <= report["map5_trained"] <= 1.0
    run = out / "zero_shot"
    assert (run / "model_config.json").is_file() and (run / "embedding.weights.h5").is_file()
    assert (out / "submission.zip").is_file()
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["export"]["zero_shot"]["sample_images"] == 100

    # the run folder holds the whitening: its features, projected, are uncorrelated with variance
    # lam / (lam + eps) along each component (numpy's eigenvalues of the same sample)
    from guie_nb.data.prepare import load_manifest, train_paths
    from guie_nb.model.reduction import sample_features
    from guie_nb.run_dir import load_embedding_model

    model, cfg = load_embedding_model(run)
    feats = sample_features(model, cfg.input_size, cfg.resize_mode, train_paths(data_dir, load_manifest(data_dir)), 100)
    dense = model.get_layer("projection")
    y = feats.astype(np.float64) @ np.asarray(dense.kernel, np.float64) + np.asarray(dense.bias, np.float64)
    lam = np.sort(np.linalg.eigvalsh(np.cov(feats.astype(np.float64).T)))[::-1][:64]
    np.testing.assert_allclose(np.cov(y.T), np.diag(lam / (lam + 1e-6)), atol=2e-4)


def test_soup_source_of_the_export(data_dir, tmp_path):
    """The export's soup source: two runs, greedy on the held-out mP@5, the projection refitted as
    PCA, written as a run folder that loads back to the same model."""
    from guie_nb.data.prepare import load_manifest
    from guie_nb.evaluation import ValidationSet, evaluate_keras
    from guie_nb.export.model_source import export_model
    from guie_nb.run_dir import load_embedding_model

    a = save_demo_model(tmp_path / "a", seed=0, dropout=0.0)
    b = save_demo_model(tmp_path / "b", seed=1, dropout=0.0)
    resolved = resolve_export(data_dir=data_dir, out_dir=tmp_path / "out",
                              soup={"model_dirs": [str(a), str(b)], "mode": "greedy", "reduction": "pca",
                                    "sample_images": 120})
    val = ValidationSet.from_manifest(data_dir, load_manifest(data_dir))
    source = export_model(resolved["export"], data_dir, val)
    soup = source.info["soup"]
    assert soup["mode"] == "greedy" and soup["chosen"][0] == int(np.argmax(soup["individual_scores"]))
    assert len(soup["soup_scores"]) == len(soup["chosen"])
    assert all(x <= y for x, y in zip(soup["soup_scores"], soup["soup_scores"][1:]))  # never drops
    assert source.info["reduction"]["kind"] == "pca" and source.info["reduction"]["samples"] == 120
    reloaded, _ = load_embedding_model(tmp_path / "out" / "soup")
    for x, y in zip(reloaded.get_weights(), source.model.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert evaluate_keras(reloaded, val, 64, "squash")["map5"] >= 0.0


def test_dry_run_of_a_zero_shot_and_a_soup_export(data_dir, tmp_path):
    """The export's dry run: a zero-shot export needs no run folder, a soup names each missing
    run, and a second backbone adds its forward pass to the scoring-time estimate."""
    from guie_nb.preflight import preflight

    zs = {"model": {"backbone": "demo-tiny", "dropout": 0.0}, "reduction": "pca", "sample_images": 100}
    one = preflight(resolve_export(data_dir=data_dir, out_dir=tmp_path / "a", zero_shot=zs, dry_run=True))
    assert one["ok"], one["problems"]
    assert not any(i["name"].startswith("model ") for i in one["inputs"])
    two_towers = {**zs, "model": {**zs["model"], "extra_backbones": [{"backbone": "demo-tiny"}]}}
    two = preflight(resolve_export(data_dir=data_dir, out_dir=tmp_path / "b", zero_shot=two_towers, dry_run=True))
    assert two["estimates"]["scoring_hours"] == pytest.approx(2 * one["estimates"]["scoring_hours"])

    soup = {"model_dirs": [str(tmp_path / "run1"), str(tmp_path / "run2")], "mode": "uniform"}
    report = preflight(resolve_export(data_dir=data_dir, out_dir=tmp_path / "c", soup=soup, train_dir=None,
                                      dry_run=True))
    assert not report["ok"]
    missing = [p for p in report["problems"] if p.startswith("input missing: model model_config.json")]
    assert [m.split("(")[1] for m in missing] == [f"{tmp_path / r / 'model_config.json'})" for r in ("run1", "run2")]
