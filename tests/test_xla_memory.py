"""XLA's own memory figure for the training step on a TPU v5e-8, compiled ahead of time on this CPU.

Needs the libtpu wheel (requirements.txt) for the TPU compiler; no TPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guie_nb.model.embedding import ModelConfig
from guie_nb.training.config import TrainConfig
from guie_nb.training.xla_memory import (GIB, XlaMemory, compiled_memory, hbm_capacity, parse_resource_exhausted,
                                         unavailable_reason)

SRC = str(Path(__file__).resolve().parents[1] / "src")

TINY = ModelConfig(backbone="demo-tiny", dropout=0.1)
FSDP = dict(layout="model_parallel", model_parallel=1, precision="mixed_bfloat16", optimizer="adamw")


def _libtpu():
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        pytest.skip(f"libtpu is not installed ({e}): no TPU compiler for the ahead-of-time figures")


def test_parse_resource_exhausted_both_formats():
    new = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
           "(15.80G) exceeds available HBM (15.75G).")
    old = "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 512.00M of 15.75G hbm."
    assert parse_resource_exhausted(new) == (int(15.80 * GIB), int(15.75 * GIB))
    assert parse_resource_exhausted(old) == (512 * 1024**2, int(15.75 * GIB))
    assert parse_resource_exhausted("INTERNAL: something else") is None


def test_unknown_topology_gives_none_and_a_reason(caplog):
    _libtpu()
    assert "v5e:9x9x9" in unavailable_reason("v5e:9x9x9")
    assert compiled_memory(TINY, TrainConfig(batch_size=8, **FSDP), num_classes=10, topology="v5e:9x9x9") is None
    assert "no XLA memory figure" in caplog.text
    assert unavailable_reason() is None


PLACEMENT_SCRIPT = textwrap.dedent(
    """
    import jax
    import optax
    import guie_nb
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import build_step
    from guie_nb.training.xla_memory import abstract_inputs, abstract_variables

    assert len(jax.devices()) == 8
    model = ModelConfig(backbone="demo-tiny", dropout=0.1)
    cfg = TrainConfig(batch_size=16, steps_per_execution=2, frozen_blocks=1, layout="model_parallel",
                      model_parallel=2, precision="mixed_bfloat16")
    # the real state, placed as train() places it
    real_state = build_step(model, cfg, num_classes=5, steps=10).initial_state()

    with abstract_variables():
        setup = build_step(model, cfg, num_classes=5, steps=10)
        state, batches = abstract_inputs(setup, model, cfg)
    assert all(v._value is None for v in setup.training_model.variables), "abstract variables were allocated"

    def describe(tree):
        return jax.tree.map(lambda a: (a.shape, str(a.dtype), a.sharding.spec), tree)

    assert describe(state) == describe(real_state)
    P = jax.sharding.PartitionSpec
    specs = {a.sharding.spec for a in jax.tree.leaves(state)}
    assert {P("batch", "model"), P("model", "batch"), P("model"), P()} <= specs, specs  # a real mix
    # AdamW: two moments per trained parameter, placed as the parameter
    assert len(state.frozen) > 0
    for moment in ("mu", "nu"):
        assert describe(optax.tree_utils.tree_get(state.opt_state, moment)) == describe(state.params)
    images, labels = batches[0]["image"], batches[0]["label"]
    assert images.shape == (2, 16, 64, 64, 3) and labels.shape == (2, 16), batches
    assert images.sharding.spec == P(None, "batch")
    print("OK")
    """
)


def test_abstract_inputs_are_placed_as_the_trainer_places_real_ones():
    """Shapes, dtypes and shardings of the abstract state equal a real build's on 8 emulated CPU devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", PLACEMENT_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stdout[-2000:] + run.stderr[-4000:]


def test_tiny_model_peak_per_v5e_chip_grows_with_the_batch():
    _libtpu()
    small = compiled_memory(TINY, TrainConfig(batch_size=8, **FSDP), num_classes=10)
    large = compiled_memory(TINY, TrainConfig(batch_size=32, **FSDP), num_classes=10)
    for r in (small, large):
        assert isinstance(r, XlaMemory) and r.fits and r.devices == 8 and r.device_kind == "TPU v5 lite"
        assert r.argument_bytes > 0 and r.peak_bytes > 0 and r.compile_seconds > 0
        assert r.capacity_bytes == pytest.approx(15.75 * GIB, rel=0.01)  # v5e: 16 GiB, 0.25 reserved
    assert large.peak_bytes > small.peak_bytes
    assert large.argument_bytes > small.argument_bytes  # the batch is an argument: 3 more images per chip


def test_a_step_that_cannot_fit_comes_back_with_xla_figures():
    _libtpu()
    r = compiled_memory(TINY, TrainConfig(batch_size=2**17, **FSDP), num_classes=10)
    assert r is not None and not r.fits and "RESOURCE_EXHAUSTED" in r.message
    assert r.temp_bytes > r.capacity_bytes == hbm_capacity()


@pytest.mark.slow
@pytest.mark.extended  # 3 minutes of compiling; `make rehearse XLA=1` gives the same figure per kernel
def test_vit_h14_fsdp_batch_128_per_v5e_chip():
    """ViT-H-14, FSDP over 8 chips, AdamW, mixed bf16, 224 px, batch 128: ~10.4 GiB (minutes to compile)."""
    _libtpu()
    model = ModelConfig(backbone="ViT-H-14", embedding_dim=64)
    r = compiled_memory(model, TrainConfig(batch_size=128, **FSDP), num_classes=17_691)
    assert r is not None and r.fits, r
    print(r.summary())
    assert 9.5 * GIB < r.peak_bytes < 11.5 * GIB, r.summary()
