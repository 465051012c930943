"""Data-prep throughput: the whole `prepare()` against plain PIL decode + resize + encode.

Writes a Products-10K-layout dataset of photo-like JPEGs at realistic sizes (by default 2,000
images, half 1024x768 and half 800x600 -- the second an assumed GLDv2-like size, most GLDv2
photos being at most 800 px on the long side; not measured here), then measures in one run:
  - plain PIL: open, convert("RGB"), resize the longer side to --max-side (bicubic), JPEG-encode;
    one process, no I/O besides reading the files: the floor any data-prep pays per image;
  - data-prep on 1 process (in this process, as `prepare(processes=1)` runs in its caller's):
    everything (listing, existence pass, selection, size estimate, decode, EXIF/mode checks,
    resize, encode, TFRecord framing, shard and marker writes, manifest);
  - data-prep on --processes worker processes, the path Kaggle's 4-core CPU kernels take; the
    time includes starting the workers, as a user's run does.
Both data-prep runs use the same --images-per-shard, so they write the same files (checked, byte
for byte), and alternate (1, N, 1, N, ...) so that a load change on a shared machine hits both.
Prints wall-clock images/s and, per configuration, CPU milliseconds per image (this process and
its workers, from `getrusage`: user, system, minor page faults), which a shared machine distorts
far less than wall time; then the per-core ratio to plain PIL (goal >= 0.9) and the 1 -> N
speed-up (goal >= 1.7 for 2), each from the best of --repeats runs.

Plain PIL runs after `raise_malloc_thresholds()`, as data-prep's encoders do, so the two differ by
their work, not by the allocator (see docs/data_prep.md, "Speed"). JPEGs at least twice
`--max-side` are decoded at 1/2 scale in the DCT by data-prep (plain PIL decodes them in full), so
with the default sizes half the images favour data-prep.

    PYTHONPATH=src python benchmarks/data_prep.py [--images 2000] [--sizes 1024x768,800x600]
        [--max-side 512] [--processes 2] [--images-per-shard 125] [--repeats 2]
    PYTHONPATH=src python benchmarks/data_prep.py --quick     # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import guie_nb  # noqa: F401  (import order: before anything that may load TensorFlow)
import numpy as np
from PIL import Image

from guie_nb.data.prepare import prepare
from guie_nb.data.shard_writer import raise_malloc_thresholds


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


class Run(NamedTuple):
    """One timed run: wall seconds and the CPU of this process plus its finished child processes."""
    wall: float
    user: float
    system: float
    minor_faults: int

    @property
    def cpu(self) -> float:
        return self.user + self.system


def measured(fn) -> Run:
    """Run `fn()`; children (the pool's workers) count once reaped, which `prepare` does before it returns."""
    before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return Run(wall, sum(a.ru_utime - b.ru_utime for a, b in zip(after, before)),
               sum(a.ru_stime - b.ru_stime for a, b in zip(after, before)),
               sum(a.ru_minflt - b.ru_minflt for a, b in zip(after, before)))


def plain_pil(paths: list[Path], max_side: int, quality: int) -> None:
    for p in paths:
        with Image.open(p) as img:
            img = img.convert("RGB")
            s = max_side / max(img.size)
            if s < 1:
                img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
            img.save(io.BytesIO(), "JPEG", quality=quality)


def data_prep(root: Path, out: Path, n: int, max_side: int, quality: int, images_per_shard: int,
              processes: int) -> str:
    """One `prepare()` run into a fresh `out`; returns a digest of the files it wrote (shards + solution)."""
    shutil.rmtree(out, ignore_errors=True)
    m = prepare([{"kind": "products10k", "root": str(root), "images_per_class": 10**6, "min_images_per_class": 1}],
                out, max_side=max_side, jpeg_quality=quality, images_per_shard=images_per_shard,
                processes=processes, progress=False)
    assert m["images_written"] == n, m["skipped"][:3]
    h = hashlib.sha256()
    for f in sorted(out.glob("*.tfrec")) + sorted(out.glob("*.csv")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def row(name: str, runs: list[Run], n: int, cores_used: int) -> str:
    best = min(runs, key=lambda r: r.wall)
    cpu = min(runs, key=lambda r: r.cpu)
    return (f"{name:24s} {best.wall:7.2f} {n / best.wall:8.1f} {n / best.wall / cores_used:9.1f}   "
            f"{1e3 * cpu.cpu / n:6.2f} ({1e3 * cpu.user / n:.2f} user, {1e3 * cpu.system / n:.2f} system)"
            f" {cpu.minor_faults / n:7.0f}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--sizes", default="1024x768,800x600", help="WxH of the source JPEGs, cycled")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--images-per-shard", type=int, default=125,
                    help="the same for every run; several shards per worker, as in a real-size run")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs, in seconds")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.sizes, args.max_side, args.repeats, args.images_per_shard = 48, "320x240,256x192", 96, 1, 12
    if args.processes < 2:
        ap.error("--processes must be at least 2 (it is compared with 1 process)")
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "out"
        paths = write_dataset(root, args.images, sizes)
        n = len(paths)
        load_before = os.getloadavg()[0]
        raise_malloc_thresholds()  # as data-prep's encoders do (see the docstring)
        plain = [measured(lambda: plain_pil(paths, args.max_side, args.quality)) for _ in range(args.repeats)]
        runs: dict[int, list[Run]] = {1: [], args.processes: []}
        digests = set()
        for _ in range(args.repeats):
            for p in runs:
                digest = []
                runs[p].append(measured(lambda: digest.append(data_prep(root, out, n, args.max_side, args.quality,
                                                                        args.images_per_shard, p))))
                digests |= set(digest)
        assert len(digests) == 1, "1 and N processes wrote different files"
    one, many = (min(r.wall for r in runs[p]) for p in runs)
    plain_wall = min(r.wall for r in plain)
    cpu = {p: min(r.cpu for r in rs) / n for p, rs in [(0, plain), *runs.items()]}
    result = {
        "images": n, "processes": args.processes,
        "cpu_ms_per_image": {"plain_pil": 1e3 * cpu[0], "data_prep_1": 1e3 * cpu[1],
                             f"data_prep_{args.processes}": 1e3 * cpu[args.processes]},
        "ratio_per_core_wall": plain_wall / one, "ratio_per_core_cpu": cpu[0] / cpu[1],
        "speed_up_wall": one / many, "cpu_per_image_n_over_1": cpu[args.processes] / cpu[1],
        "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
    }
    print(f"images: {n} JPEGs {args.sizes} -> max side {args.max_side}, quality {args.quality}, "
          f"{args.images_per_shard} per shard; cores: {os.cpu_count()}; best of {args.repeats}")
    print(f"{'':24s} {'wall s':>7s} {'images/s':>8s} {'per core':>9s}   {'CPU ms/image (all processes)':30s}"
          f" {'minor faults/image':>7s}")
    print(row("plain PIL", plain, n, 1))
    print(row("data-prep, 1 process", runs[1], n, 1))
    print(row(f"data-prep, {args.processes} processes", runs[args.processes], n, args.processes))
    print(f"ratio data-prep (1 process) / plain PIL, per core: {result['ratio_per_core_wall']:.2f} wall, "
          f"{result['ratio_per_core_cpu']:.2f} CPU   (goal >= 0.9)")
    print(f"speed-up 1 -> {args.processes} processes: {result['speed_up_wall']:.2f}x wall   (goal >= 1.7 for 2); "
          f"CPU per image {args.processes} / 1 processes: {result['cpu_per_image_n_over_1']:.2f} "
          f"(worker start-up included)")
    print(f"load average (1 min): {load_before:.1f} before, {result['load_average_after']:.1f} after, on "
          f"{os.cpu_count()} cores (wall figures are only meaningful on an idle machine)")
    return result


if __name__ == "__main__":
    main()
