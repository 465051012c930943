#!/usr/bin/env python
"""Images per second per host core of the training input pipeline, against what a TPU v5e-8 eats.

Writes photo-like JPEGs at realistic sizes (`benchmarks/data_prep.py`'s generator; by default 1024x768
and 800x600), runs the project's data-prep on them (`guie_nb.data.prepare.prepare`, `--max-side`
384 as the first-place preset), then reads the shards with `guie_nb.data.pipeline.train_dataset` at
each `--sizes` resolution (ViT-H-14's 224 and the fine-tune's 280) with its augmentations (random
resized crop, flip, colour jitter) and batching, as training does. The first batch (graph building,
shuffle-buffer fill) is left out.

The rate per core is images per CPU-second of this process (tf.data's threads included), so it
holds on a shared machine where the wall-clock rate does not; the wall-clock rate is printed too.

Against it: what 8 v5e chips consume at a planned MFU (`--mfu`, default 0.4), from the analytic
FLOPs per image of ViT-H-14 (`guie_nb.model.flops`): images/s = 8 x 197 TFLOP/s x MFU / FLOPs per
image, for a full fine-tune and for a frozen backbone (forward only: about 3x the images). "Host
cores needed" = that rate / the rate per core. Google Cloud's 8-chip v5e VM (ct5lp-hightpu-8t) has
224 vCPUs (cloud.google.com/tpu/docs/v5e, "VM types"); Kaggle does not document its TPU VM's
cores (print `os.cpu_count()` in a TPU notebook to see them).

    PYTHONPATH=src python benchmarks/input_pipeline.py [--images 512] [--sizes 224,280] [--batch 64]
    PYTHONPATH=src python benchmarks/input_pipeline.py --quick     # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import guie_nb  # noqa: F401  (import order: before anything that may load TensorFlow)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_prep import write_dataset  # noqa: E402  (the photo-like JPEG generator, one place)

V5E_CHIPS, V5E_PEAK_BF16 = 8, 197e12  # cloud.google.com/tpu/docs/v5e
V5E_8_HOST_VCPUS = 224  # ct5lp-hightpu-8t, same page


def pipeline_rate(files: list[Path], size: int, batch: int, batches: int) -> dict:
    """Images per CPU-second and per wall-second of `train_dataset` at `size`, after the first batch."""
    from guie_nb.data.pipeline import train_dataset

    ds = train_dataset(files, size, batch, seed=0, epoch=0, steps=batches + 1)
    it = ds.as_numpy_iterator()
    first = next(it)
    assert first[0]["image"].shape == (1, batch, size, size, 3), first[0]["image"].shape
    cpu, wall, n = time.process_time(), time.perf_counter(), 0
    for images, _ in it:
        n += images["image"].shape[0] * images["image"].shape[1]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"images": n, "per_cpu_second": n / cpu, "per_wall_second": n / wall, "cpu_seconds": cpu}


def v5e_8_consumption(size: int, mfu: float, classes: int) -> dict[str, float]:
    """Images/s a v5e-8 trains ViT-H-14 at `size` px with `mfu`, by what trains (analytic FLOPs)."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.model.flops import flops_per_image

    cfg = ModelConfig(backbone="ViT-H-14", image_size=size)
    budget = V5E_CHIPS * V5E_PEAK_BF16 * mfu
    return {"full fine-tune": budget / flops_per_image(cfg, classes).model,
            "frozen backbone": budget / flops_per_image(cfg, classes, freeze_backbone=True).model}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="source JPEGs written and prepared")
    ap.add_argument("--source-sizes", default="1024x768,800x600", help="WxH of the source JPEGs, cycled")
    ap.add_argument("--max-side", type=int, default=384, help="data-prep's stored size (first-place preset: 384)")
    ap.add_argument("--sizes", default="224,280", help="training resolutions")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=24, help="timed batches per resolution")
    ap.add_argument("--mfu", type=float, default=0.4, help="planned model FLOPs utilisation of the v5e-8")
    ap.add_argument("--classes", type=int, default=17691, help="margin-head classes (the memory plan's)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs, in seconds")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.source_sizes, args.max_side = 24, "320x240", 128
        args.sizes, args.batch, args.batches = "64", 4, 3

    from guie_nb.data.prepare import load_manifest, prepare, train_paths

    source_sizes = [tuple(map(int, s.split("x"))) for s in args.source_sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "out"
        write_dataset(root, args.images, source_sizes, per_class=4)
        prepare([{"kind": "products10k", "root": str(root), "images_per_class": 10**6, "min_images_per_class": 1}],
                out, max_side=args.max_side, images_per_shard=max(1, args.images // 8), processes=1, progress=False)
        files = train_paths(out, load_manifest(out))
        for size in map(int, args.sizes.split(",")):
            rate = pipeline_rate(files, size, args.batch, args.batches)
            need = v5e_8_consumption(size, args.mfu, args.classes)
            rows.append({"size": size, **rate,
                         "v5e_8_images_per_second": need,
                         "host_cores_needed": {k: v / rate["per_cpu_second"] for k, v in need.items()}})
    for r in rows:
        print(f"{r['size']} px: {r['per_cpu_second']:.1f} images per CPU-second (per core), "
              f"{r['per_wall_second']:.1f} images/s wall on {os.cpu_count()} cores; a v5e-8 at MFU {args.mfu} "
              "consumes " + ", ".join(f"{v:,.0f}/s ({k}: {r['host_cores_needed'][k]:.0f} host cores)"
                                      for k, v in r["v5e_8_images_per_second"].items()))
    print(f"a v5e-8 VM on Google Cloud has {V5E_8_HOST_VCPUS} vCPUs; JPEGs: {args.images} x {args.source_sizes} -> "
          f"max side {args.max_side}; load average {os.getloadavg()[0]:.1f}")
    result = {"rows": rows, "images": args.images, "max_side": args.max_side, "batch": args.batch,
              "mfu": args.mfu, "v5e_8_host_vcpus": V5E_8_HOST_VCPUS, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg()[0]}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
