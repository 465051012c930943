#!/usr/bin/env python
"""Per-image latency of each exported format in its scorer runtime vs the Keras model's forward.

Same images (photo-like sizes, each one a new shape, as in the test set), same run: the Keras
embedding model (resize + forward, TF backend, this process) and the submission in TensorFlow
2.6.4 / PyTorch 1.11.0 (the scorer's runtimes, one image at a time, after a warm-up). Prints the
median ms per image, the ratio to Keras and the implied time for 205,000 test images.

On an AMD CPU, torch 1.11's bundled MKL (2020.0) runs its GEMMs on a generic code path (MKL picks
kernels by CPU vendor): ~30 GFLOP/s per core where TensorFlow's kernels reach ~90. The TorchScript
row is then measured twice, as the scorer would run it on this CPU, and with MKL_DEBUG_CPU_TYPE=5
(MKL 2020.0 then takes the AVX2 path it gives Intel CPUs). Each export is also timed in this
process's TensorFlow / torch: what the exported graph costs apart from the scorer runtime's kernels.

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
    p.add_argument("--mkl-intel-path", choices=["auto", "on", "off"], default="auto",
                   help="add a TorchScript row with MKL_DEBUG_CPU_TYPE=5 (auto: on AMD CPUs)")
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
    mkl_rows = args.mkl_intel_path == "on" or (args.mkl_intel_path == "auto" and cpu_vendor() == "AuthenticAMD")
    for fmt in args.formats.split(","):
        zip_path = write_submission(model, cfg, fmt, work / fmt / "submission.zip", args.flip_tta)
        runtime = ensure_runtime(fmt)
        runs = [("", {})]
        if fmt == "torchscript" and mkl_rows:
            runs.append((", MKL Intel path", {"MKL_DEBUG_CPU_TYPE": "5"}))
        for label, extra_env in runs:
            out = work / f"{fmt}.json"
            proc = runtime.run([script, "--format", fmt, "--zip", str(zip_path), "--images", str(work / "images"),
                                "--out", str(out), "--threads", str(args.threads)], extra_env=extra_env)
            result = json.loads(out.read_text()) if out.is_file() else {}
            seconds = [r["seconds"] for r in result.get("images", []) if "seconds" in r]
            if proc.returncode or not seconds:
                print(f"{fmt}: failed: {result.get('load_error') or proc.stderr[-1000:]}", file=sys.stderr)
                return 1
            rows[f"{fmt} ({result['framework_version']}{label})"] = statistics.median(seconds)
        name, seconds = time_in_process(fmt, zip_path, images, work / f"{fmt}-unzipped", args.threads)
        rows[name] = seconds

    keras_ms = 1000 * rows["keras (TF backend, this process)"]
    print(f"{cfg.backbone}, {args.images} images {min(sizes)}..{max(sizes)}, flip TTA {args.flip_tta}, "
          f"threads {args.threads or 'default'}, CPU {cpu_vendor() or 'unknown'}; scorer runtimes for the exports")
    print(f"{'model':48s} {'ms/image':>9s} {'x keras':>8s} {'205k images':>12s}")
    for name, s in rows.items():
        print(f"{name:48s} {1000 * s:9.1f} {1000 * s / keras_ms:8.2f} {s * TEST_IMAGES / 3600:10.2f} h")
    return 0


def time_in_process(fmt: str, zip_path: Path, images: dict, folder: Path, threads: int) -> tuple[str, float]:
    """The row name and median seconds per image of a submission run in this process's framework,
    fed as the scorer feeds it (uint8 `[1, H, W, 3]` / `[1, 3, H, W]`), after 3 warm-up images."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    if fmt == "saved_model":
        import tensorflow as tf

        from guie_nb.export.saved_model import SavedModelEmbedder

        embed, version = SavedModelEmbedder(folder), tf.__version__
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
        module = torch.jit.load(str(folder / "saved_model.pt"), map_location="cpu").eval()
        version = torch.__version__

        def embed(image: np.ndarray):
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None])

    batch = list(images.values())
    for image in batch[:3]:
        embed(image)
    seconds = []
    for image in batch:
        t0 = time.perf_counter()
        embed(image)
        seconds.append(time.perf_counter() - t0)
    return f"{fmt} ({version}, this process)", statistics.median(seconds)


def cpu_vendor() -> str:
    """`vendor_id` from /proc/cpuinfo ('GenuineIntel', 'AuthenticAMD'), '' where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    sys.exit(main())
