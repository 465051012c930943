"""The export's `concat` source (4th place): soups of two backbones' runs, the backbones joined in
one model (the smaller tower at its own resolution), the projection fitted as PCA of the
concatenated features; the rules of `guie_nb.model.concat`; the export's dry run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from guie_nb.model.concat import concat_config
from guie_nb.params import resolve_export

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _export_helpers import save_demo_model  # noqa: E402
from _training_helpers import make_small_data  # noqa: E402

BIG = {"backbone": "demo-tiny", "dropout": 0.0}  # 64 px
SMALL = {"backbone": "demo-tiny-quickgelu", "image_size": 32, "dropout": 0.0, "hidden_dim": 16}


def test_concat_config_takes_the_backbones_and_sizes():
    cfg = concat_config([BIG, SMALL])
    assert cfg["backbone"] == "demo-tiny" and cfg["image_size"] is None and cfg["embedding_dim"] == 64
    assert cfg["extra_backbones"] == [{"backbone": "demo-tiny-quickgelu", "backbone_weights": "", "image_size": 32}]
    assert cfg["hidden_dim"] is None and cfg["dropout"] == 0.0  # the projection is fitted on the towers' features


@pytest.mark.parametrize("parts, message", [
    ([BIG], "at least 2 parts"),
    ([SMALL, BIG], "part 1 .* runs at 64 px, above part 0's 32 px: put the largest input size first"),
    ([BIG, {**SMALL, "resize_mode": "shortest_side_crop"}], "resizes with 'shortest_side_crop', part 0 with 'squash'"),
    ([BIG, {**SMALL, "size_features": True}], "uses size_features"),
    ([BIG, {**SMALL, "extra_backbones": ["demo-tiny"]}], "already concatenates backbones"),
])
def test_concat_rules_are_named(parts, message):
    with pytest.raises(ValueError, match=message):
        concat_config(parts)
    with pytest.raises(ValueError, match=r"embedding_dim 300 must be in 1..192"):
        concat_config([BIG, SMALL], embedding_dim=300)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("concat"))


def test_concat_source_of_the_export(data_dir, tmp_path):
    """Part 0: a greedy soup of two 64 px runs; part 1: one 32 px run. The combined model holds the
    soup's and the run's backbones, its output is the L2-normalised PCA of the concatenated features
    (fitted on the training sample), it reloads from its run folder and exports to TorchScript."""
    import torch

    from guie_nb.data.prepare import load_manifest, train_paths
    from guie_nb.evaluation import ValidationSet
    from guie_nb.export.checks import keras_reference, probe_images
    from guie_nb.export.model_source import export_model
    from guie_nb.export.torchscript import build_torch_module, save_torchscript
    from guie_nb.model.reduction import sample_features
    from guie_nb.run_dir import load_embedding_model

    a = save_demo_model(tmp_path / "a", seed=0, **BIG)
    b = save_demo_model(tmp_path / "b", seed=1, **BIG)
    c = save_demo_model(tmp_path / "c", seed=2, **SMALL)
    concat = {"parts": [{"model_dirs": [str(a), str(b)], "mode": "greedy"}, {"model_dirs": [str(c)]}],
              "reduction": "pca", "sample_images": 120}
    resolved = resolve_export(data_dir=data_dir, out_dir=tmp_path / "out", concat=concat)
    assert resolved["model"]["extra_backbones"][0]["image_size"] == 32
    val = ValidationSet.from_manifest(data_dir, load_manifest(data_dir))
    source = export_model(resolved["export"], data_dir, val)
    parts = source.info["concat"]["parts"]
    assert parts[0]["mode"] == "greedy" and parts[0]["backbone"] == "demo-tiny" and parts[1]["image_size"] == 32
    assert source.info["reduction"] == {**source.info["reduction"], "kind": "pca", "dim": 64, "feature_dim": 192,
                                        "samples": 120}

    model, cfg = source.model, source.cfg
    small, _ = load_embedding_model(c)
    for x, y in zip(model.get_layer("visual_1").get_weights(), small.get_layer("visual").get_weights()):
        np.testing.assert_array_equal(x, y)  # part 1's backbone, untouched
    first, _ = load_embedding_model(a)
    soup_chosen = parts[0]["chosen"]
    if soup_chosen == [0]:
        for x, y in zip(model.get_layer("visual").get_weights(), first.get_layer("visual").get_weights()):
            np.testing.assert_array_equal(x, y)

    files = train_paths(data_dir, load_manifest(data_dir))
    feats = sample_features(model, 64, "squash", files, 120).astype(np.float64)
    centred = feats - feats.mean(axis=0)
    lam = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1][:64]
    dense = model.get_layer("projection")
    y = feats @ np.asarray(dense.kernel, np.float64) + np.asarray(dense.bias, np.float64)
    np.testing.assert_allclose(np.var(y, axis=0, ddof=1), lam, rtol=1e-3, atol=1e-6)  # the top-64 components

    reloaded, reloaded_cfg = load_embedding_model(tmp_path / "out" / "concat")
    assert reloaded_cfg.to_dict() == cfg.to_dict()
    for x, yw in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(x, yw)

    module = torch.jit.load(str(save_torchscript(build_torch_module(model, cfg), tmp_path / "saved_model.pt")))
    reference = keras_reference(model, cfg)
    for image in probe_images([(40, 90), (120, 64)]):
        with torch.no_grad():
            out = module(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()
        np.testing.assert_allclose(out[0], reference(image), atol=2e-5)


def test_dry_run_of_a_concat_export(data_dir, tmp_path):
    """The dry run names each part's missing run folders; with them there, the combined model's
    scoring time counts both towers, the smaller at its own size."""
    from guie_nb.preflight import preflight, scoring_estimate

    concat = {"parts": [{"model_dirs": [str(tmp_path / "r1"), str(tmp_path / "r2")], "mode": "greedy"},
                        {"model_dirs": [str(tmp_path / "r3")], "mode": "uniform"}], "reduction": "pca"}
    report = preflight(resolve_export(data_dir=data_dir, out_dir=tmp_path / "x", concat=concat, dry_run=True))
    missing = [p for p in report["problems"] if p.startswith("input missing: model model_config.json")]
    assert len(missing) == 3 and "no model config" in " ".join(report["problems"])
    save_demo_model(tmp_path / "r1", **BIG)
    save_demo_model(tmp_path / "r2", seed=1, **BIG)
    save_demo_model(tmp_path / "r3", **SMALL)
    report = preflight(resolve_export(data_dir=data_dir, out_dir=tmp_path / "y", concat=concat, dry_run=True))
    assert report["ok"], report["problems"]
    # this kernel's hours: part 0's greedy soup of 2 (3 held-out evaluations), part 1 scored once, ...
    from guie_nb.data.prepare import load_manifest
    from guie_nb.preflight import export_hours

    e, val = report["estimates"], load_manifest(data_dir)["val"]
    assert e["machine"] == "cpu" and e["heldout_images"] == val["num_queries"] + val["num_index"] > 0
    assert [w["heldout_passes"] for w in e["export_work"][:2]] == [3, 1]
    assert e["train_images"] < 2000  # the PCA sample (2,000 by default) is what there is
    assert e["hours"] > 0
    assert e["hours"] == pytest.approx(export_hours(e["export_work"], "cpu", e["heldout_images"], e["train_images"]))
    assert {"name": "session_hours", "limit": 12.0, "value": e["hours"], "ok": True} in report["limits"]
    joined = {**BIG, "extra_backbones": [{"backbone": SMALL["backbone"], "image_size": 32}]}
    # 04 writes the zip and the concatenated run folder (`out_dir/concat`): the weights twice
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.preflight import exported_weights_gb

    assert e["output_gb"] == pytest.approx(2 * exported_weights_gb(ModelConfig.from_dict(joined)))
    combined = scoring_estimate(joined)
    assert report["estimates"]["scoring_hours"] == pytest.approx(combined["hours"])  # one neck: features -> 64
    big, small = scoring_estimate(BIG), scoring_estimate({**SMALL, "image_size": 32})  # each with its own neck
    assert report["estimates"]["scoring_hours"] == pytest.approx(big["hours"] + small["hours"], rel=1e-3)


def test_bad_concat_parameters_are_named(tmp_path):
    base = {"data_dir": tmp_path, "out_dir": tmp_path}
    with pytest.raises(ValueError, match="concat.parts must list at least 2 parts"):
        resolve_export(**base, concat={"parts": [{"model_dirs": [str(tmp_path)]}]})
    with pytest.raises(ValueError, match=r"concat.parts\[1\] must be"):
        resolve_export(**base, concat={"parts": [{"model_dirs": ["a"]}, {"dirs": ["b"]}]})
    with pytest.raises(ValueError, match=r"concat.reduction must be one of"):
        resolve_export(**base, concat={"parts": [{"model_dirs": ["a"]}, {"model_dirs": ["b"]}], "reduction": None})
    with pytest.raises(ValueError, match=r"exactly one of model_dir, zero_shot, soup, concat"):
        resolve_export(**base, model_dir=tmp_path, concat={"parts": []})


def test_export_notebook_with_a_concat_source(data_dir, tmp_path):
    """Notebook 04 with `concat` and no model_dir, as fourth_place stages it (a train dir for the
    untrained score): it soups, joins, fits PCA, exports the two-tower model as a SavedModel verified
    in TensorFlow 2.6.4, and reports each part and the combined model."""
    import json

    import papermill

    from guie_nb.notebook_build import build_all, use_for_papermill

    a = save_demo_model(tmp_path / "a", seed=0, **BIG)
    b = save_demo_model(tmp_path / "b", seed=1, **BIG)
    c = save_demo_model(tmp_path / "c", seed=2, **SMALL)
    d = save_demo_model(tmp_path / "d", seed=3, **SMALL)
    (a / "metrics.json").write_text(json.dumps({"initial": {"map5": 0.01}, "final": {"map5": 0.02}}))
    built = build_all(HERE.parent / "notebooks", tmp_path / "notebooks")
    notebook = next(p for p in built if p.stem == "04_export")
    out = tmp_path / "out"
    params = {"data_dir": str(data_dir), "model_dir": None, "train_dir": str(a), "out_dir": str(out),
              "export_format": "saved_model",
              "concat": {"parts": [{"model_dirs": [str(a), str(b)], "mode": "greedy"},
                                   {"model_dirs": [str(c), str(d)], "mode": "uniform"}],
                         "reduction": "pca", "sample_images": 100}}
    use_for_papermill()
    papermill.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), parameters=params,
                               cwd=str(HERE.parent), kernel_name="python3", progress_bar=False, log_output=False)
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "saved_model" and report["verified_in"].startswith("TensorFlow 2.6")
    assert report["embedding_dim"] == 64 and report["min_cosine_vs_keras"] >= 0.9999
    assert [p["backbone"] for p in report["concat"]["parts"]] == ["demo-tiny", "demo-tiny-quickgelu"]
    assert report["reduction"]["feature_dim"] == 192 and report["map5_untrained"] == 0.01
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["model"]["extra_backbones"][0]["image_size"] == 32
