"""The benchmarks run at tiny sizes (`--quick`) and report what their docstrings say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_quick():
    r = _load("train_step").main(["--quick"])
    assert r["images_per_second"] > 0 and r["step_ms"] > 0
    # one trace, one executable: the timed calls measure the step, not a recompilation
    assert r["train_step_compilations"] == 1 and r["train_step_executables"] == 1
    # the CPU has no data-sheet peak: no MFU is invented for it, the measured ceiling is labelled
    assert r["peak_bf16_tflops_per_device"] == "no peak known for this device kind" and r["mfu"] is None
    assert r["ratio_to_measured_matmul"] > 0 and r["measured_float32_matmul_tflops"] > 0
    # unscanned: XLA's count is comparable with the analytic one (elementwise ops on top)
    assert 1.0 < r["xla_over_analytic"] < 1.15
    model = r["analytic_gflop_per_image"]
    assert model["model"] == pytest.approx(model["forward"] + model["backward"])


def test_input_pipeline_quick():
    r = _load("input_pipeline").main(["--quick"])
    (row,) = r["rows"]
    assert row["images"] > 0 and row["per_cpu_second"] > 0
    need = row["v5e_8_images_per_second"]
    assert need["frozen backbone"] > 2 * need["full fine-tune"]  # forward only vs forward + backward
    for kind, rate in need.items():
        assert row["host_cores_needed"][kind] == pytest.approx(rate / row["per_cpu_second"])


def test_data_prep_quick():
    r = _load("data_prep").main(["--quick"])  # also checks that 1 and 2 processes write the same files
    cpu = r["cpu_ms_per_image"]
    assert r["images"] == 48 and all(v > 0 for v in cpu.values())
    assert r["ratio_per_core_cpu"] == pytest.approx(cpu["plain_pil"] / cpu["data_prep_1"])
    assert r["cpu_per_image_n_over_1"] == pytest.approx(cpu["data_prep_2"] / cpu["data_prep_1"])
    assert r["speed_up_wall"] > 0 and r["ratio_per_core_wall"] > 0
