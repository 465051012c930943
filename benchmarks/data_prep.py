"""Data-prep throughput: the whole `prepare()` against plain PIL decode + resize + encode.

Writes a Products-10K-layout dataset of photo-like JPEGs at realistic sizes (by default 2,000
images, half 1024x768 and half 800x600 -- the second an assumed GLDv2-like size, most GLDv2
photos being at most 800 px on the long side; not measured here), then measures in one run:
  - plain PIL: open, convert("RGB"), resize the longer side to --max-side (bicubic), JPEG-encode;
    one process, no I/O besides reading the files: the floor any data-prep pays per image;
  - data-prep on 1 process: everything (listing, selection, size estimate, decode, EXIF/mode
    checks, resize, encode, TFRecord framing, shard and marker writes, manifest);
  - data-prep on all cores.
Prints images/s per core of each, their ratio (goal >= 0.9) and the 1 -> N-process speed-up
(goal >= 1.7 for 2). Each timing is the best of --repeats runs (the machine may be shared: the
load average is printed with the results, and CPU seconds per image besides wall time).

Note: JPEGs at least twice `--max-side` are decoded at 1/2 scale in the DCT by data-prep (plain PIL
decodes them in full), so with the default sizes half the images favour data-prep.

    PYTHONPATH=src python benchmarks/data_prep.py [--images 2000] [--sizes 1024x768,800x600]
        [--max-side 512] [--processes 2]
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


def write_dataset(root: Path, n: int, sizes: list[tuple[int, int]], per_class: int = 10,
                  bases: int = 24) -> list[Path]:
    """`n` JPEGs cycling through `sizes`; each a different crop (and mirror) of one of `bases` photos
    rendered 1.25x larger, so all files differ without rendering `n` photos (which is slow)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    rng = np.random.default_rng(0)
    big = {(w, h): [photo(b, w * 5 // 4, h * 5 // 4) for b in range(bases)] for w, h in sizes}
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        src = big[(w, h)][(i // len(sizes)) % bases]
        x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
        img = src.crop((x, y, x + w, y + h))
        p = root / "train" / f"{i}.jpg"
        (img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else img).save(p, quality=90)
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
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--sizes", default="1024x768,800x600", help="WxH of the source JPEGs, cycled")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "out"
        paths = write_dataset(root, args.images, sizes)
        n = len(paths)
        plain = min(plain_pil(paths, args.max_side, args.quality) for _ in range(args.repeats))
        one = min(data_prep(root, out, n, args.max_side, args.quality, 1) for _ in range(args.repeats))
        many = min(data_prep(root, out, n, args.max_side, args.quality, args.processes)
                   for _ in range(args.repeats))
    plain_rate, one_rate, many_rate = n / plain, n / one, n / many
    print(f"images: {n} JPEGs {args.sizes} -> max side {args.max_side}, quality {args.quality}; "
          f"cores: {os.cpu_count()}, processes: {args.processes}")
    print(f"plain PIL decode+resize+encode : {plain_rate:8.1f} images/s per core")
    print(f"data-prep, 1 process           : {one_rate:8.1f} images/s per core")
    print(f"ratio data-prep / plain PIL    : {one_rate / plain_rate:8.2f}   (goal >= 0.9)")
    print(f"data-prep, {args.processes} processes          : {many_rate:8.1f} images/s "
          f"({many_rate / args.processes:.1f} per core)")
    print(f"speed-up 1 -> {args.processes} processes        : {many_rate / one_rate:8.2f}x  (goal >= 1.7 for 2)")
    print(f"CPU per image, 1 / {args.processes} processes     : {1e3 * CPU[1] / n:.1f} / "
          f"{1e3 * CPU[args.processes] / n:.1f} ms (incl. worker start-up, ~0.5 s each); "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
