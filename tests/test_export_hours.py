"""The export kernel's (04) hours: the forward passes it runs, counted per model source, over the
assumed throughput of its machine (`guie_nb.preflight.export_work` / `export_hours`)."""

from __future__ import annotations

import json

import pytest

from guie_nb.model.embedding import ModelConfig
from guie_nb.model.flops import flops_per_image
from guie_nb.preflight import ASSUMED_EXPORT_FLOPS, export_hours, export_work, soup_evaluations

B32 = {"backbone": "ViT-B-32", "embedding_dim": 64}
F_B32 = flops_per_image(ModelConfig.from_dict(B32), backward=False).forward
PROBES, WARMUP = 11, 6  # guie_nb.export.verify.PROBES, verify_submission's warm-up calls


def _export(**source) -> dict:
    return {"zero_shot": None, "soup": None, "concat": None, "format": "saved_model", "flip_tta": False, **source}


def _hours_by_hand(kernel_flops: float, cpu_flops: float, machine: str) -> float:
    """kernel work at the machine's rate; the scorer runtime on one of the CPU's 2 cores."""
    return (kernel_flops / ASSUMED_EXPORT_FLOPS[machine] + cpu_flops / (ASSUMED_EXPORT_FLOPS["cpu"] / 2)) / 3600


def test_soup_evaluations_follow_greedy_soup():
    assert [soup_evaluations(n, "greedy") for n in (1, 2, 3, 5)] == [0, 3, 5, 9]
    assert soup_evaluations(4, "uniform") == 0


def test_greedy_soup_with_flip_tta_by_hand():
    """3 runs: 5 held-out evaluations of the Keras model, the PCA refit's 500 images, the exported
    model with flip TTA (2 forwards per image) on the probes, their Keras references and the
    held-out scoring of the submission."""
    resolved = {"model": B32, "export": _export(flip_tta=True, soup={
        "model_dirs": ["a", "b", "c"], "mode": "greedy", "reduction": "pca", "sample_images": 500})}
    work = export_work(resolved)
    heldout = 1000
    kernel = F_B32 * (5 * heldout + 500) + 2 * F_B32 * (PROBES + heldout)
    cpu = 2 * F_B32 * (PROBES + WARMUP)
    for machine in ("cpu", "gpu"):
        assert export_hours(work, machine, heldout) == pytest.approx(_hours_by_hand(kernel, cpu, machine))
    assert export_hours(work, "gpu", heldout) < export_hours(work, "cpu", heldout)


def test_zero_shot_scores_before_and_after_the_fit():
    resolved = {"model": B32, "export": _export(zero_shot={"model": B32, "reduction": "whiten", "sample_images": 40})}
    work = export_work(resolved)
    kernel = F_B32 * (2 * 100 + 40) + F_B32 * (PROBES + 100)
    assert export_hours(work, "cpu", 100) == pytest.approx(_hours_by_hand(kernel, F_B32 * (PROBES + WARMUP), "cpu"))


def test_concat_counts_each_part_at_its_own_size(tmp_path):
    """Part 0: a greedy soup of 2 runs (3 held-out evaluations, the last one its score); part 1: one
    run, scored once; then the PCA fit of the combined model (its held-out score is the submission's)."""
    from guie_nb.model.concat import concat_config

    small = {**B32, "image_size": 160}
    for name, model in (("r1", B32), ("r2", B32), ("r3", small)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_config.json").write_text(json.dumps(ModelConfig.from_dict(model).to_dict()))
    combined = concat_config([ModelConfig.from_dict(B32).to_dict(), ModelConfig.from_dict(small).to_dict()], 64)
    parts = [{"model_dirs": [str(tmp_path / "r1"), str(tmp_path / "r2")], "mode": "greedy"},
             {"model_dirs": [str(tmp_path / "r3")], "mode": "uniform"}]
    resolved = {"model": combined, "export": _export(concat={"parts": parts, "reduction": "pca", "sample_images": 300})}
    work = export_work(resolved)
    f_small = flops_per_image(ModelConfig.from_dict(small), backward=False).forward
    f_both = flops_per_image(ModelConfig.from_dict(combined), backward=False).forward
    assert f_small < F_B32 < f_both
    heldout = 200
    kernel = 3 * heldout * F_B32 + heldout * f_small + f_both * 300 + f_both * (PROBES + heldout)
    assert export_hours(work, "gpu", heldout) == pytest.approx(
        _hours_by_hand(kernel, f_both * (PROBES + WARMUP), "gpu"))
    (tmp_path / "r3" / "model_config.json").unlink()
    assert export_work(resolved) is None  # a part's config unknown: no estimate


def test_torchscript_scores_the_held_out_images_on_the_cpu():
    resolved = {"model": B32, "export": _export(format="torchscript")}
    where = {w["what"].split(",")[0]: w["where"] for w in export_work(resolved)}
    assert where["held-out scoring of the submission"] == "cpu"
    assert export_hours(export_work(resolved), "gpu", 10_000) > 10_000 * F_B32 / ASSUMED_EXPORT_FLOPS["cpu"] / 3600


def test_a_fit_samples_at_most_the_training_images_there_are():
    resolved = {"model": B32, "export": _export(zero_shot={"model": B32, "reduction": "pca", "sample_images": 4000})}
    work = export_work(resolved)
    cpu = F_B32 * (PROBES + WARMUP)
    assert export_hours(work, "cpu", 100, train_images=1000) == pytest.approx(
        _hours_by_hand(F_B32 * (2 * 100 + 1000 + PROBES + 100), cpu, "cpu"))
    assert export_hours(work, "cpu", 100) == pytest.approx(
        _hours_by_hand(F_B32 * (2 * 100 + 4000 + PROBES + 100), cpu, "cpu"))
