"""`make rehearse`: each planted fault makes the rehearsal fail and names it; the full presets
pass (slow: about a minute each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guie_nb.kaggle.fixtures import RawSpec, keras_hub_clip_model
from guie_nb.kaggle.rehearse import rehearse
from guie_nb.model.backbones import vit_config
from guie_nb.model.weights import locate_weights
from guie_nb.model.weights_check import weights_problems
from guie_nb.presets._kaggle import H14_LAION2B

REPO = Path(__file__).resolve().parents[1]


def _rehearse(tmp_path, preset="first_place", **kwargs) -> dict:
    """Tiny raw fixtures here (fast); `make rehearse` and `make rehearse-all` use the published sizes."""
    kwargs.setdefault("scale", "tiny")
    return rehearse(preset, tmp_path, notebook_dir=REPO / "notebooks", metadata_dir=REPO / "kernel-metadata",
                    log=lambda *_: None, **kwargs)


def _problems(report) -> str:
    return "\n".join(report["problems"] + [p for k in report["kernels"] for p in k["problems"]])


def test_a_preset_key_the_notebook_does_not_have(tmp_path):
    report = _rehearse(tmp_path, overrides={"02_train_tpu": {"train": {"epochz": 3}}})
    assert not report["ok"] and "unknown training parameter(s) ['epochz']" in _problems(report)
    saved = json.loads((tmp_path / "first_place" / "report.json").read_text())
    assert saved["ok"] is False and saved["preset"] == "first_place"


def test_a_source_root_that_no_metadata_attaches(tmp_path):
    # where Products-10K would be mounted, but named as a path: nothing attaches it
    mount = tmp_path.resolve() / "first_place" / "kaggle" / "input" / "products-10k"
    sources = [{"kind": "products10k", "root": str(mount), "val_classes": 2}]
    report = _rehearse(tmp_path, only=["01_data_prep"], overrides={"01_data_prep": {"sources": sources, "num_shards": 1}})
    (kernel,) = report["kernels"]
    assert not report["ok"] and kernel["internet"] is False
    assert not any(a.endswith("/products-10k") for a in kernel["attached"]), kernel["attached"]
    assert any(p.startswith("input missing: source products10k") for p in kernel["problems"]), kernel["problems"]


def test_an_estimated_output_over_20_gb(tmp_path):
    # 10,000 classes x 10 Products-10K images kept at 1024 px: ~0.28 MB of JPEG each
    raw = {"products-10k": RawSpec(classes=10_000, per_class=10, side=1024, unique_images=24)}
    sources = [{"kind": "products10k", "root": "kaggle://datasets/{owner}/products-10k", "images_per_class": 10,
                "val_classes": 2}]
    report = _rehearse(tmp_path, only=["01_data_prep"], raw=raw,
                       overrides={"01_data_prep": {"sources": sources, "max_side": 1024, "num_shards": 1}})
    (kernel,) = report["kernels"]
    assert kernel["estimates"]["output_gb"] > 20
    assert any(p.startswith("over the limit: output_gb") for p in kernel["problems"]), kernel["problems"]


def test_weights_whose_shapes_do_not_match_the_backbone(tmp_path):
    model = {"backbone": "ViT-L-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64}
    report = _rehearse(tmp_path, only=["02_train_tpu"], overrides={"02_train_tpu": {"model": model}})
    (kernel,) = report["kernels"]
    text = "\n".join(kernel["problems"])
    assert not report["ok"] and "width 1280 != 1024 (configured)" in text and "layers 32 != 24" in text, text
    assert kernel["resolved"]["weights"]["path"].endswith("input/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3")


def test_kaggle_model_fixture_has_the_real_shapes_and_stays_small(tmp_path, monkeypatch):
    folder = keras_hub_clip_model(tmp_path / "h14", vit_config("ViT-H-14"))
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2_000_000
    where = {"spec": str(folder), "source": "folder", "path": str(folder), "found": True}
    assert weights_problems(where, vit_config("ViT-H-14")) == []
    assert any("patch_size 14 != 16" in p for p in weights_problems(where, vit_config("ViT-B-16")))
    monkeypatch.setenv("GUIE_KAGGLE_INPUT", str(tmp_path / "input"))
    located = locate_weights(H14_LAION2B)
    assert located["path"] == str(tmp_path / "input/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3")
    assert not located["found"]


def test_kaggle_model_fixtures_of_openai_presets_are_quickgelu():
    """KerasHub's OpenAI CLIP presets (`clip_vit_large_patch14_336`) are open_clip's `openai` tag:
    QuickGELU, so the fixture standing in for them is the `-quickgelu` backbone."""
    from guie_nb.kaggle.fixtures import backbone_for_preset

    assert backbone_for_preset("clip_vit_large_patch14_336") == "ViT-L-14-336-quickgelu"
    assert backbone_for_preset("clip_vit_base_patch32") == "ViT-B-32-quickgelu"
    assert backbone_for_preset("clip_vit_h_14_laion2b_s32b_b79k") == "ViT-H-14"
    with pytest.raises(ValueError, match="cannot tell the backbone"):
        backbone_for_preset("clip_vit_huge_patch14")


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("rehearsals")  # one fixture cache (.fixtures) for the presets below


# first_place (the most stages) in `make test`; the others are `make rehearse-all`'s work again, so
# `make test-extended` runs them (a few minutes each)
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["first_place"] + [pytest.param(p, marks=pytest.mark.extended) for p in
                                    ("second_place", "third_place", "fourth_place", "fifth_place", "seed_recipe",
                                     "host_baseline", "zero_shot_h14")])
def test_full_presets_rehearse(shared_out, preset):
    from guie_nb import presets

    report = _rehearse(shared_out, preset)
    assert report["ok"], _problems(report)
    keys = [k["kernel"] for k in report["kernels"]]
    assert [k.split("#")[0] for k in keys if not k.startswith("01_data_prep")] == \
        [k for k in presets.notebook_params(preset) if k != "01_data_prep"]  # one kernel per stage, in order
    assert report["scoring"]["fits"] and report["scoring"]["hours"] <= 9
    for k in report["kernels"]:
        if k["notebook"] in ("02_train_tpu", "03_finetune"):
            assert k["estimates"]["memory_gib_per_device_plan"] <= 16
            assert "hours_basis" in k["estimates"]  # scaled to what the data-prep kernels planned
        if k["notebook"] == "04_export":  # its forward passes counted, for the planned held-out images
            assert k["estimates"]["hours"] is not None and "(the data-prep plan)" in k["estimates"]["hours_basis"]


def test_training_hours_follow_the_data_prep_plan():
    from guie_nb.kaggle.rehearse import _scale_training_hours, _session_limit

    entry = {"notebook": "02_train_tpu", "estimates": {"hours": 0.5, "train_images": 100},
             "limits": [{"name": "session_hours", "limit": 9.0, "value": 0.5, "ok": True}], "problems": []}
    _scale_training_hours(entry, 2_000)
    assert entry["estimates"]["hours"] == pytest.approx(10.0)
    _session_limit(entry, {"enable_tpu": True, "machine_shape": "TpuV5E8"})
    assert entry["limits"][0] == {"name": "session_hours", "limit": 9.0, "value": pytest.approx(10.0), "ok": False}
    assert entry["problems"][0].startswith("over the limit: session_hours 10 > 9")
    _session_limit(entry, {"enable_tpu": False})  # the same run on a CPU kernel: 12 h
    assert entry["limits"][0]["ok"] and not entry["problems"]


def test_resampled_training_hours_follow_the_plans_class_sizes():
    """min_draws_per_class: the fixture's resampled epoch (train_images) scales to the plan's
    classes resampled (sum of classes x max(size, m)), not by the plain image ratio."""
    from guie_nb.kaggle.rehearse import _scale_training_hours

    sizes = {"products10k": {"5": 100, "40": 10}, "gldv2": {"10": 50}}  # 900 + 500 images planned
    entry = {"notebook": "02_train_tpu", "resolved": {"train": {"min_draws_per_class": 20}},
             "estimates": {"hours": 0.5, "train_images": 100, "data_train_images": 40},
             "limits": [{"name": "session_hours", "limit": 9.0, "value": 0.5, "ok": True}], "problems": []}
    _scale_training_hours(entry, 1_400, sizes)  # resampled: 100 x 20 + 10 x 40 + 50 x 20 = 3,400
    assert entry["estimates"]["hours"] == pytest.approx(0.5 * 3_400 / 100)
    assert entry["limits"][0]["value"] == pytest.approx(17.0) and "3400 training images" in entry["estimates"]["hours_basis"]
    one = {**entry, "resolved": {"train": {"min_draws_per_class": 20, "train_sources": ["gldv2"]}},
           "estimates": {"hours": 0.5, "train_images": 100, "data_train_images": 40}}
    _scale_training_hours(one, 1_400, sizes)
    assert one["estimates"]["hours"] == pytest.approx(0.5 * 1_000 / 100)
    plain = {**entry, "resolved": {"train": {"min_draws_per_class": 0}},
             "estimates": {"hours": 0.5, "train_images": 40, "data_train_images": 40}}
    _scale_training_hours(plain, 1_400, sizes)  # off: the plain ratio, as before
    assert plain["estimates"]["hours"] == pytest.approx(0.5 * 1_400 / 40)


def test_data_prep_split_over_kernels_is_staged_side_by_side_and_mounted_together(tmp_path):
    report = _rehearse(tmp_path, "seed_recipe", only=["01_data_prep", "02_train_tpu"],
                       overrides={"01_data_prep": {"num_shards": 2}})
    assert report["ok"], _problems(report)
    parts, train = report["kernels"][:2], report["kernels"][2]
    assert [k["slug"] for k in parts] == ["guie-nb-01-data-prep-part-1-of-2", "guie-nb-01-data-prep-part-2-of-2"]
    assert [k["resolved"]["data"]["shard_index"] for k in parts] == [0, 1]
    assert {"kernel:rehearsal/" + k["slug"] for k in parts} <= set(train["attached"])
    data_dirs = train["resolved"]["data"]["data_dir"]
    assert [Path(d).parent.name for d in data_dirs] == [k["slug"] for k in parts]
    # the two parts' manifests merge into one label space (guie_nb.data.prepare.load_manifest)
    assert any(i["name"].startswith("training shards") and i["found"] for i in train["inputs"])


def test_every_kernel_reads_a_split_data_prep(tmp_path):
    """The export reads the held-out split from the data-prep parts too (data_dir is their list)."""
    report = _rehearse(tmp_path, "host_baseline", overrides={"01_data_prep": {"num_shards": 2}})
    assert report["ok"], _problems(report)
    export = next(k for k in report["kernels"] if k["notebook"] == "04_export")
    assert len(export["resolved"]["data"]["data_dir"]) == 2


def test_submit_output_is_not_the_stand_in_zip():
    from guie_nb.kaggle.rehearse import _stand_in_zip

    def entry(**estimates):
        return {"notebook": "05_submit", "estimates": {"output_gb": 3e-7, **estimates}, "problems": [],
                "limits": [{"name": "output_gb", "limit": 20.0, "value": 3e-7, "ok": True}]}

    known = entry(model_output_gb=25.0)
    _stand_in_zip(known)
    assert known["estimates"]["output_gb"] == 25.0 and "as 04 estimates" in known["estimates"]["output_basis"]
    assert not known["limits"][0]["ok"] and known["problems"] == ["over the limit: output_gb 25 > 20"]
    unknown = entry()  # --only 05_submit: no export config mounted
    _stand_in_zip(unknown)
    assert unknown["estimates"]["output_gb"] is None and unknown["limits"][0]["value"] is None
    assert unknown["estimates"]["output_basis"].startswith("unknown")


def test_a_staged_preset_rehearses_each_stage_from_the_one_before(tmp_path):
    """Each stage's dry run mounts the stage before's output and resolves its model with the
    stage's changes; the report names every kernel and carries the preset's scoring estimate."""
    report = _rehearse(tmp_path, "demo_stages")
    assert report["ok"], _problems(report)
    kernels = {k["kernel"]: k for k in report["kernels"]}
    assert list(kernels) == ["01_data_prep", "02_train_tpu:train-64", "03_finetune:backbone-80",
                             "03_finetune:products", "04_export", "05_submit"]
    products = kernels["03_finetune:products"]
    assert "kernel:rehearsal/guie-nb-03-finetune-backbone-80" in products["attached"]
    assert products["resolved"]["model"]["image_size"] == 80 and products["resolved"]["model"]["head"]["margin"] == 0.15
    assert products["estimates"]["train_images"] < products["estimates"]["data_train_images"]  # products10k only
    assert kernels["04_export"]["resolved"]["export"]["model_dir"].endswith("guie-nb-03-finetune-products/products")
    assert report["scoring"]["image_size"] == 80 and report["scoring"]["patch_stride"] == 6
    assert report["scoring"]["tokens"] == ((80 - 8) // 6 + 1) ** 2 + 1
    # 05 hands over a stand-in zip here: its output is the export's estimate from the model, said so
    submit, export = kernels["05_submit"]["estimates"], kernels["04_export"]["estimates"]
    assert submit["output_gb"] == export["output_gb"] > 1e-4 and "stand-in" in submit["output_basis"]
    assert submit["scoring_hours"] == pytest.approx(export["scoring_hours"])


def test_export_hours_are_judged_on_the_machine_it_is_staged_for():
    """An export whose counted forward passes take longer than a CPU kernel's 12 h is flagged there,
    scaled to the held-out images the data-prep kernels planned; staged on a T4 it fits."""
    from guie_nb.kaggle.metadata import on_machine
    from guie_nb.kaggle.rehearse import _export_hours, _session_limit
    from guie_nb.preflight import ASSUMED_EXPORT_FLOPS

    # one step: 2 held-out passes of 1 TFLOP per image (a 0.5 TFLOP model with flip TTA, say)
    work = [{"what": "held-out scoring", "flops_per_image": 1e12, "heldout_passes": 2, "images": 0, "where": "kernel"}]

    def entry():
        return {"notebook": "04_export", "problems": [],
                "estimates": {"hours": 0.01, "export_work": work, "heldout_images": 20},
                "limits": [{"name": "session_hours", "limit": 12.0, "value": 0.01, "ok": True}]}

    cpu_meta = {"enable_gpu": False, "enable_tpu": False}
    on_cpu = entry()
    _export_hours(on_cpu, cpu_meta, 12_000)
    _session_limit(on_cpu, cpu_meta)
    assert on_cpu["estimates"]["hours"] == pytest.approx(2 * 12_000 * 1e12 / ASSUMED_EXPORT_FLOPS["cpu"] / 3600)
    assert "12000 held-out images (the data-prep plan)" in on_cpu["estimates"]["hours_basis"]
    assert not on_cpu["limits"][0]["ok"]
    assert on_cpu["problems"][0].startswith("over the limit: session_hours 66.7 > 12 on CPU (stage it on a GPU")
    gpu_meta = on_machine(cpu_meta, "NvidiaTeslaT4")
    on_gpu = entry()
    _export_hours(on_gpu, gpu_meta, 12_000)
    _session_limit(on_gpu, gpu_meta)
    assert on_gpu["limits"][0] == {"name": "session_hours", "limit": 9.0,
                                   "value": pytest.approx(2 * 12_000 / 2.43 / 3600), "ok": True}
    assert not on_gpu["problems"]
