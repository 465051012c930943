#!/usr/bin/env python
"""Training throughput of the embedding model + margin head, and its model FLOPs utilisation (MFU).

MFU = analytic model FLOPs per image (`guie_nb.model.flops`: forward + backward, 1 multiply-add = 2
FLOPs, PaLM appendix B) x images per second / (devices x peak dense bf16 FLOP/s of the device kind,
from `guie_nb.model.flops.PEAK_BF16_FLOPS`). HFU adds the recomputed forward of `--remat`. A device
kind without a known peak (any CPU) gets no MFU; for every device the run also times a large matmul
in the same precision and reports the step's share of that *measured matmul ceiling*, labelled as
such. With `--steps-per-execution 1` the step is compiled unscanned and XLA's own FLOP count of it
is printed beside the analytic one (XLA's cost analysis counts a scanned loop body once, so for a
scanned step it would be wrong by the factor of the scan length).

Data are random tensors already on the device: this measures the step, not the input pipeline
(`benchmarks/input_pipeline.py` measures that).

    KERAS_BACKEND=jax python benchmarks/train_step.py --backbone demo-tiny --batch 64
    KERAS_BACKEND=jax python benchmarks/train_step.py --backbone ViT-B-16 --batch 256 --precision mixed_bfloat16
    python benchmarks/train_step.py --quick      # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import guie_nb  # noqa: E402,F401  (before TensorFlow, see conftest)


def measured_matmul_flops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a chain of four n x n matmuls on the default device, best of `repeats` (a ceiling
    measured here, not the device's data-sheet peak)."""
    import jax

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


def random_batches(setup, steps: int, batch: int, size: int, classes: int):
    """`[steps, batch, ...]` random images and labels, sharded over the devices along the batch."""
    import numpy as np

    from guie_nb.training.trainer import put_batches

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, (steps, batch)).astype("int32")
    images = rng.uniform(0, 255, (steps, batch, size, size, 3)).astype("float32")
    return put_batches(({"image": images, "label": labels}, labels), setup.distribution)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="demo-tiny")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="steps scanned in one call (1: unscanned, and XLA's FLOP count is printed)")
    p.add_argument("--calls", type=int, default=5, help="timed calls after the compiling one")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--remat", action="store_true")
    p.add_argument("--freeze-backbone", action="store_true")
    p.add_argument("--frozen-blocks", type=int, default=0)
    p.add_argument("--layout", default="data_parallel", choices=["data_parallel", "model_parallel"])
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n matmul ceiling")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs, in seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.image_size, args.batch, args.classes = "demo-tiny", 32, 8, 16
        args.calls, args.matmul_size = 2, 256

    import jax
    import numpy as np

    from guie_nb.model.embedding import ModelConfig
    from guie_nb.model.flops import peak_bf16_flops, train_flops_per_image
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import build_step

    spe = args.steps_per_execution
    model_cfg = ModelConfig(backbone=args.backbone, image_size=args.image_size)
    cfg = TrainConfig(batch_size=args.batch, steps_per_execution=spe, precision=args.precision, remat=args.remat,
                      freeze_backbone=args.freeze_backbone, frozen_blocks=args.frozen_blocks, layout=args.layout)
    setup = build_step(model_cfg, cfg, args.classes, steps=1000)
    state = setup.initial_state()  # committed to its placement, as the trainer starts it
    batches = random_batches(setup, spe, args.batch, model_cfg.input_size, args.classes)
    analytic = train_flops_per_image(model_cfg, cfg, args.classes)
    xla_per_image = setup.step.flops(state, batches) / args.batch if spe == 1 else None

    t = time.perf_counter()
    state, (loss, _) = setup.step(state, batches)
    np.asarray(loss)
    first_call_s = time.perf_counter() - t
    times = []
    for _ in range(args.calls):
        t = time.perf_counter()
        state, (loss, _) = setup.step(state, batches)
        np.asarray(loss)
        times.append(time.perf_counter() - t)
    per_call = float(np.median(times))
    images_per_second = args.batch * spe / per_call

    devices = jax.devices()
    kind = devices[0].device_kind
    peak = peak_bf16_flops(kind)
    matmul_dtype = "bfloat16" if args.precision == "mixed_bfloat16" else "float32"
    ceiling = measured_matmul_flops(matmul_dtype, args.matmul_size) * len(devices)
    model_flops_per_s = analytic.model * images_per_second
    result = {
        "device": f"{len(devices)} x {kind}", "backbone": args.backbone, "image_size": model_cfg.input_size,
        "batch": args.batch, "steps_per_execution": spe, "precision": args.precision, "remat": args.remat,
        "first_call_s": first_call_s, "step_ms": 1000 * per_call / spe, "images_per_second": images_per_second,
        "analytic_gflop_per_image": {"forward": analytic.forward / 1e9, "backward": analytic.backward / 1e9,
                                     "remat": analytic.remat / 1e9, "model": analytic.model / 1e9},
        "xla_gflop_per_image": xla_per_image / 1e9 if xla_per_image else None,
        "xla_over_analytic": xla_per_image / analytic.hardware if xla_per_image else None,
        "model_tflops_per_s": model_flops_per_s / 1e12,
        "peak_bf16_tflops_per_device": peak / 1e12 if peak else "no peak known for this device kind",
        "mfu": model_flops_per_s / (peak * len(devices)) if peak else None,
        "hfu": analytic.hardware * images_per_second / (peak * len(devices)) if peak else None,
        f"measured_{matmul_dtype}_matmul_tflops": ceiling / 1e12,
        "ratio_to_measured_matmul": model_flops_per_s / ceiling,
        "train_step_compilations": setup.step.compilations, "train_step_executables": setup.step.executables,
        "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
