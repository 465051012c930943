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
    forced = plan("ViT-H-14", batch_size=128, layout="data_parallel", remat=False, grad_accum_steps=1)
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
    plain = {"remat": False, "grad_accum_steps": 1}
    p = plan("ViT-g-14", batch_size=1024, device="v3-8", **plain)
    assert not p.fits and "fits=False" in p.summary()
    assert p.bytes_per_device == min(
        plan("ViT-g-14", batch_size=1024, device="v3-8", layout="model_parallel", model_parallel=mp,
             **plain).bytes_per_device
        for mp in (1, 2, 4, 8)
    )
    # nothing fits even one image per device with every saver on
    worst = plan("ViT-g-14", batch_size=8, device="v3-8", image_size=2240)
    assert not worst.fits and worst.remat and worst.micro_batch_per_device == 1


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="device"):
        plan("ViT-H-14", 128, device="v9-8")
    with pytest.raises(ValueError, match="multiple"):
        plan("ViT-H-14", 100)
    with pytest.raises(ValueError, match="frozen_blocks"):
        plan("ViT-H-14", 128, frozen_blocks=40)
    with pytest.raises(ValueError, match="optimizer"):
        plan("ViT-H-14", 128, optimizer="adafactor")


def test_remat_keeps_block_inputs_plus_one_block():
    cfg = vit_config("ViT-B-16")
    plain = plan("ViT-B-16", batch_size=256, layout="data_parallel", remat=False, grad_accum_steps=1)
    remat = plan("ViT-B-16", batch_size=256, layout="data_parallel", remat=True, grad_accum_steps=1)
    s, b, h = cfg.grid_size**2 + 1, 32, cfg.width
    one_block = plain.breakdown["activations"] / cfg.layers
    # Korthikanti et al. section 5: 2*s*b*h bytes (16-bit) per block input, + one block rebuilt
    assert remat.breakdown["activations"] == pytest.approx(2 * s * b * h * cfg.layers + one_block, rel=1e-6)
    assert remat.remat and not plain.remat
    assert {k: v for k, v in remat.breakdown.items() if k not in ("activations", "xla_overhead")} == {
        k: v for k, v in plain.breakdown.items() if k not in ("activations", "xla_overhead")}


def test_accumulation_scales_with_the_micro_batch():
    base = dict(layout="data_parallel", remat=False)
    k4 = plan("ViT-B-16", batch_size=512, grad_accum_steps=4, **base)
    small = plan("ViT-B-16", batch_size=128, grad_accum_steps=1, **base)
    assert k4.grad_accum_steps == 4 and k4.per_device_batch == 64 and k4.micro_batch_per_device == 16
    assert k4.breakdown["activations"] == small.breakdown["activations"]
    assert k4.breakdown["logits"] == small.breakdown["logits"]
    assert k4.breakdown["images"] == 4 * small.breakdown["images"]  # the whole batch sits on the device
    assert k4.breakdown["accumulated_gradients"] == pytest.approx(k4.breakdown["gradients"], rel=1e-6)
    assert "accumulated_gradients" not in small.breakdown


def test_the_planner_tries_the_cheapest_saver_first():
    def fits(batch, **kw):
        return plan("ViT-H-14", batch_size=batch, **kw).fits

    assert (plan("ViT-H-14", 64).layout, plan("ViT-H-14", 64).remat) == ("data_parallel", False)
    p = plan("ViT-H-14", 256)  # what the 1st place trained with; no plain layout holds it
    assert p.fits and p.remat and p.grad_accum_steps == 1 and p.layout == "data_parallel"
    assert not fits(256, remat=False, grad_accum_steps=1)
    p = plan("ViT-H-14", 256, remat=False)  # remat forced off: accumulation instead
    assert p.fits and not p.remat and p.grad_accum_steps == 2
    p = plan("ViT-H-14", 8192)
    assert p.fits and p.remat and p.grad_accum_steps == 4
    assert not fits(8192, remat=True, grad_accum_steps=2)
    forced = plan("ViT-H-14", 64, remat=True, grad_accum_steps=2, layout="data_parallel")
    assert (forced.remat, forced.grad_accum_steps, forced.micro_batch_per_device) == (True, 2, 4)


def test_accumulation_must_split_the_batch():
    with pytest.raises(ValueError, match="grad_accum_steps 3"):
        plan("ViT-H-14", 256, grad_accum_steps=3)
    with pytest.raises(ValueError, match="per-replica batch 32 .* grad_accum_steps=64"):
        plan("ViT-H-14", 256, grad_accum_steps=64, layout="data_parallel")
    # chosen k never leaves a replica without a whole micro-batch
    p = plan("ViT-g-14", batch_size=8, device="v3-8", image_size=2240)
    assert p.per_device_batch % p.grad_accum_steps == 0


def test_plan_for_reads_both_configs():
    from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model
    from guie_nb.model.memory_plan import plan_for
    from guie_nb.training import param_groups
    from guie_nb.training.config import TrainConfig

    model_cfg = ModelConfig(backbone="demo-tiny", hidden_dim=32, embedding_dim=16,
                            head={"kind": "arcface", "subcenters": 3})
    model = build_training_model(build_embedding_model(model_cfg), 40, model_cfg.head)
    train_cfg = TrainConfig(batch_size=64, freeze_backbone=True, optimizer="sgd", precision="mixed_bfloat16",
                            remat=True, grad_accum_steps=2)
    p = plan_for(model_cfg, train_cfg, num_classes=40)
    # neck and sub-centre head included; the non-trainable margin vector is not counted
    assert p.params_total == sum(int(v.value.size) for v in model.trainable_variables)
    trained = param_groups.plan([v.path for v in model.trainable_variables], train_cfg, 4).trained
    assert p.params_trainable == sum(int(v.value.size) for v, t in zip(model.trainable_variables, trained) if t)
    assert (p.layout, p.remat, p.grad_accum_steps, p.batch_size) == ("data_parallel", True, 2, 64)
    assert p.breakdown["optimizer"] == p.breakdown["gradients"]  # SGD: one slot
    h14 = ModelConfig(backbone="ViT-H-14", image_size=280)
    cfg = TrainConfig(batch_size=256, optimizer="sgd", freeze_head=True, precision="mixed_bfloat16")
    assert not plan_for(h14, cfg, 17691).fits  # as configured: data parallel, no remat
    chosen = plan_for(h14, cfg, 17691, choose=True)
    assert chosen.fits and chosen.remat
    assert plan_for(h14, TrainConfig(**{**cfg.to_dict(), "remat": True}), 17691).fits
