"""The memory planner: exact parameter counts, monotone costs, the layout it picks."""

from __future__ import annotations

import pytest

from guie_nb.model.backbones import vit_config
from guie_nb.model.memory_plan import GIB, plan, vit_params
from guie_nb.model.vit import build_vit


@pytest.mark.parametrize("name", ["demo-tiny", "ViT-S-32"])
def test_parameter_count_is_exact(name):
    assert vit_params(vit_config(name)) == build_vit(vit_config(name)).count_params()


def test_open_clip_sizes():
    assert vit_params(vit_config("ViT-H-14")) == 632_076_800  # open_clip's visual tower
    assert vit_params(vit_config("ViT-B-16")) == 86_192_640


def test_vit_h14_on_v5e8_picks_a_fitting_layout():
    small = plan("ViT-H-14", batch_size=64, device="v5e-8")
    assert small.layout == "data_parallel" and small.fits
    big = plan("ViT-H-14", batch_size=128, device="v5e-8")
    assert big.fits and big.layout == "model_parallel" and big.model_parallel == 1
    assert big.bytes_per_device < 16 * GIB == big.capacity_bytes
    assert big.breakdown["weights"] * 7 < small.breakdown["weights"]  # sharded over 8
    forced = plan("ViT-H-14", batch_size=128, layout="data_parallel")
    assert not forced.fits and forced.bytes_per_device > big.bytes_per_device


def test_costs_move_the_right_way():
    base = plan("ViT-B-16", batch_size=256, layout="data_parallel")
    assert plan("ViT-B-16", batch_size=512, layout="data_parallel").breakdown["activations"] == pytest.approx(
        2 * base.breakdown["activations"], rel=1e-6
    )
    sgd = plan("ViT-B-16", batch_size=256, layout="data_parallel", optimizer="sgd")
    assert sgd.breakdown["optimizer"] * 2 == pytest.approx(base.breakdown["optimizer"], rel=1e-3)
    frozen = plan("ViT-B-16", batch_size=256, layout="data_parallel", frozen_blocks=12)
    assert frozen.params_trainable == base.params_trainable - vit_params(vit_config("ViT-B-16"))
    assert frozen.bytes_per_device < base.bytes_per_device
    hires = plan("ViT-B-16", batch_size=256, layout="data_parallel", image_size=320)
    assert hires.breakdown["activations"] > 2 * base.breakdown["activations"]
    fp32 = plan("ViT-B-16", batch_size=256, layout="data_parallel", precision="float32")
    assert fp32.breakdown["activations"] == 2 * base.breakdown["activations"]


def test_no_fit_reports_the_smallest_and_says_so():
    p = plan("ViT-g-14", batch_size=1024, device="v3-8")
    assert not p.fits and "fits=False" in p.summary()
    assert p.bytes_per_device == min(
        plan("ViT-g-14", batch_size=1024, device="v3-8", layout="model_parallel", model_parallel=mp).bytes_per_device
        for mp in (1, 2, 4, 8)
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="device"):
        plan("ViT-H-14", 128, device="v9-8")
    with pytest.raises(ValueError, match="multiple"):
        plan("ViT-H-14", 100)
    with pytest.raises(ValueError, match="frozen_blocks"):
        plan("ViT-H-14", 128, frozen_blocks=40)
    with pytest.raises(ValueError, match="optimizer"):
        plan("ViT-H-14", 128, optimizer="adafactor")
