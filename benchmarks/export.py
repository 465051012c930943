#!/usr/bin/env python
"""Per-image latency of each exported format in its scorer runtime vs the Keras model's forward.

Same images (photo-like sizes, each one a new shape, as in the test set), same run: the Keras
embedding model (resize + forward, TF backend, this process) and the submission in TensorFlow
2.6.4 / PyTorch 1.11.0 (the scorer's runtimes, one image at a time, after a warm-up). Prints the
median ms per image, the ratio to Keras and the implied time for 205,000 test images.

    python benchmarks/export.py [--backbone demo-tiny | --model-dir build/demo/finetune] [--images 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from guie_nb.notebook import use_backend

use_backend("tensorflow")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="demo-tiny", help="random-init backbone (ignored with --model-dir)")
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--formats", default="saved_model,torchscript")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for every model (1: comparable, steady numbers on a shared machine; "
                        "0: each framework's default)")
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from guie_nb.export.build import write_submission
    from guie_nb.export.checks import keras_reference
    from guie_nb.export.scorer_runtime import ensure_runtime
    from guie_nb.export.verify import TEST_IMAGES, write_probe_images
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    if args.model_dir:
        from guie_nb.run_dir import load_embedding_model

        model, cfg = load_embedding_model(args.model_dir)
    else:
        cfg = ModelConfig(backbone=args.backbone)
        model = build_embedding_model(cfg)

    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(240, 1200)), int(rng.integers(240, 1200))) for _ in range(args.images)]
    probes = [(f"img_{i:03d}", hw, "RGB", "jpg") for i, hw in enumerate(sizes)]
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    images = write_probe_images(work / "images", probes)

    embed = keras_reference(model, cfg, args.flip_tta)
    embed(next(iter(images.values())))  # warm-up
    keras_s = []
    for image in images.values():
        t0 = time.perf_counter()
        embed(image)
        keras_s.append(time.perf_counter() - t0)
    rows = {"keras (TF backend, this process)": statistics.median(keras_s)}

    script = str(resources.files("guie_nb") / "runtimes" / "score_submission.py")
    for fmt in args.formats.split(","):
        zip_path = write_submission(model, cfg, fmt, work / fmt / "submission.zip", args.flip_tta)
        runtime = ensure_runtime(fmt)
        out = work / f"{fmt}.json"
        proc = runtime.run([script, "--format", fmt, "--zip", str(zip_path), "--images", str(work / "images"),
                            "--out", str(out), "--threads", str(args.threads)])
        result = json.loads(out.read_text()) if out.is_file() else {}
        seconds = [r["seconds"] for r in result.get("images", []) if "seconds" in r]
        if proc.returncode or not seconds:
            print(f"{fmt}: failed: {result.get('load_error') or proc.stderr[-1000:]}", file=sys.stderr)
            return 1
        rows[f"{fmt} ({result['framework_version']}, scorer runtime)"] = statistics.median(seconds)

    keras_ms = 1000 * rows["keras (TF backend, this process)"]
    print(f"{cfg.backbone}, {args.images} images {min(sizes)}..{max(sizes)}, flip TTA {args.flip_tta}, "
          f"threads {args.threads or 'default'}")
    print(f"{'model':48s} {'ms/image':>9s} {'x keras':>8s} {'205k images':>12s}")
    for name, s in rows.items():
        print(f"{name:48s} {1000 * s:9.1f} {1000 * s / keras_ms:8.2f} {s * TEST_IMAGES / 3600:10.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
