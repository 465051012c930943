"""Data-prep throughput: the whole `prepare()` against plain PIL decode + resize + encode.

Writes a Products-10K-layout dataset of photo-like JPEGs, then measures in one run:
  - plain PIL: open, convert("RGB"), resize the longer side to --max-side (bicubic), JPEG-encode;
    one process, no I/O besides reading the files: the floor any data-prep pays per image;
  - data-prep on 1 process: everything (listing, selection, size estimate, decode, EXIF/mode
    checks, resize, encode, TFRecord framing, shard and marker writes, manifest);
  - data-prep on all cores.
Prints images/s per core of each, their ratio (goal >= 0.8) and the 1 -> all-cores speed-up.
Each timing is the best of --repeats runs (the machine may be shared).

    PYTHONPATH=src python benchmarks/data_prep.py [--images 300] [--size 800x600] [--max-side 512]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import guie_nb  # noqa: F401  (import order: before anything that may load TensorFlow)
import numpy as np
from PIL import Image

from guie_nb.data.prepare import prepare


def photo(seed: int, w: int, h: int) -> Image.Image:
    """Smooth shapes, gradients and mild noise: compresses like a photo (not like pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(0, 6.3)
        arr[..., c] = 128 + 80 * np.sin(xx / w * fx + ph) * np.cos(yy / h * fy)
    for _ in range(12):  # blobs with edges
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.15) * w
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        arr[mask] = rng.uniform(0, 255, 3)
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_dataset(root: Path, n: int, w: int, h: int, per_class: int = 10) -> list[Path]:
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for i in range(n):
        p = root / "train" / f"{i}.jpg"
        photo(i, w, h).save(p, quality=90)
        rows.append((p.name, i // per_class, 0))
        paths.append(p)
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("name", "class", "group"), *rows])
    return paths


def plain_pil(paths: list[Path], max_side: int, quality: int) -> float:
    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as img:
            img = img.convert("RGB")
            s = max_side / max(img.size)
            if s < 1:
                img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
            img.save(io.BytesIO(), "JPEG", quality=quality)
    return time.perf_counter() - t


def _cpu() -> float:
    t = os.times()  # this process and its finished children (the pool's workers, once joined)
    return t.user + t.system + t.children_user + t.children_system


CPU: dict[int, float] = {}  # processes -> best CPU seconds of a run


def data_prep(root: Path, out: Path, n: int, max_side: int, quality: int, processes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cpu = _cpu()
    t = time.perf_counter()
    m = prepare([{"kind": "products10k", "root": str(root), "images_per_class": 10**6, "min_images_per_class": 1}],
                out, max_side=max_side, jpeg_quality=quality, images_per_shard=max(1, n // (4 * processes)),
                processes=processes, progress=False)
    elapsed = time.perf_counter() - t
    CPU[processes] = min(CPU.get(processes, float("inf")), _cpu() - cpu)
    assert m["images_written"] == n, m["skipped"][:3]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", default="800x600", help="WxH of the source JPEGs")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "out"
        paths = write_dataset(root, args.images, w, h)
        n = len(paths)
        plain = min(plain_pil(paths, args.max_side, args.quality) for _ in range(args.repeats))
        one = min(data_prep(root, out, n, args.max_side, args.quality, 1) for _ in range(args.repeats))
        many = min(data_prep(root, out, n, args.max_side, args.quality, args.processes)
                   for _ in range(args.repeats))
    plain_rate, one_rate, many_rate = n / plain, n / one, n / many
    print(f"images: {n} JPEGs {w}x{h} -> max side {args.max_side}, quality {args.quality}; "
          f"cores: {os.cpu_count()}, processes: {args.processes}")
    print(f"plain PIL decode+resize+encode : {plain_rate:8.1f} images/s per core")
    print(f"data-prep, 1 process           : {one_rate:8.1f} images/s per core")
    print(f"ratio data-prep / plain PIL    : {one_rate / plain_rate:8.2f}   (goal >= 0.8)")
    print(f"data-prep, {args.processes} processes          : {many_rate:8.1f} images/s "
          f"({many_rate / args.processes:.1f} per core)")
    print(f"speed-up 1 -> {args.processes} processes        : {many_rate / one_rate:8.2f}x")
    print(f"CPU per image, 1 / {args.processes} processes     : {1e3 * CPU[1] / n:.1f} / "
          f"{1e3 * CPU[args.processes] / n:.1f} ms (incl. worker start-up, ~0.5 s each); "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
