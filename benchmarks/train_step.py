#!/usr/bin/env python
"""Training throughput of the embedding model + margin head, and its share of the device's
FLOP ceiling, both measured in this run.

The ceiling is measured, not looked up: a large matmul in the same precision, timed on the same
device(s). The model's FLOPs per step come from XLA's cost analysis of the compiled train step.
Data are random tensors already on the device, so this measures the step, not the input pipeline.

    KERAS_BACKEND=jax python benchmarks/train_step.py --backbone demo-tiny --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import guie_nb  # noqa: E402,F401  (before TensorFlow, see conftest)


def peak_flops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul chain on the default device (the practical ceiling)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)

    @jax.jit
    def chain(a, b):
        for _ in range(4):
            a = (a @ b) * 0.01
        return a

    chain(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        chain(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 4 * 2 * n**3 / best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="demo-tiny")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps-per-execution", type=int, default=4)
    p.add_argument("--calls", type=int, default=5, help="timed calls after the compiling one")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    args = p.parse_args(argv)

    import jax
    import numpy as np

    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import build_step

    spe = args.steps_per_execution
    model_cfg = ModelConfig(backbone=args.backbone, image_size=args.image_size)
    cfg = TrainConfig(batch_size=args.batch, steps_per_execution=spe, precision=args.precision)
    setup = build_step(model_cfg, cfg, args.classes, steps=1000)
    step, state = setup.step, setup.initial_state()
    s = model_cfg.input_size
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, (spe, args.batch)).astype("int32")
    batches = ({"image": jax.numpy.asarray(rng.uniform(0, 255, (spe, args.batch, s, s, 3)).astype("float32")),
                "label": jax.numpy.asarray(labels)}, jax.numpy.asarray(labels))
    flops_per_call = step.flops(state, batches)

    t = time.perf_counter()
    state, (loss, _) = step(state, batches)
    np.asarray(loss)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.calls):
        t = time.perf_counter()
        state, (loss, _) = step(state, batches)
        np.asarray(loss)
        times.append(time.perf_counter() - t)
    per_call = float(np.median(times))
    peak = peak_flops("bfloat16" if args.precision == "mixed_bfloat16" else "float32") * len(jax.devices())
    achieved = flops_per_call / per_call if flops_per_call else None
    result = {
        "device": f"{len(jax.devices())} x {jax.devices()[0].device_kind}", "backbone": args.backbone,
        "image_size": s, "batch": args.batch, "steps_per_execution": spe, "precision": args.precision,
        "first_call_s": compile_s, "step_ms": 1000 * per_call / spe,
        "images_per_second": args.batch * spe / per_call,
        "model_gflop_per_image": flops_per_call / (args.batch * spe) / 1e9 if flops_per_call else None,
        "achieved_tflops": achieved / 1e12 if achieved else None, "peak_matmul_tflops": peak / 1e12,
        "ratio_to_peak": achieved / peak if achieved else None,
        "train_step_compilations": step.compilations,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
