"""The embedded demo dataset: synthetic instance-level images in the real sources' file layouts.

Each instance is a fixed object (a random arrangement of coloured shapes: a "product", or a
"building" on a skyline for landmarks). Each view re-draws that same object under a new
rotation, scale, position, crop, colour cast and background, so matching views of one instance
needs what real retrieval needs: invariance to everything but the object. Seeded and
deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

OBJECT_CANVAS = 128


@dataclass(frozen=True)
class DemoSpec:
    products_classes: int = 160
    landmark_classes: int = 120
    views_per_class: int = 8
    min_side: int = 80
    max_side: int = 176
    seed: int = 0


def _rng(*keys) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _polygon(rng, cx, cy, r, n, star=False):
    pts, phase = [], rng.uniform(0, 2 * math.pi)
    for i in range(n * (2 if star else 1)):
        rr = r * (0.45 if star and i % 2 else 1.0)
        a = phase + 2 * math.pi * i / (n * (2 if star else 1))
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_product(rng) -> Image.Image:
    img = Image.new("RGBA", (OBJECT_CANVAS, OBJECT_CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    c = OBJECT_CANVAS
    # a body shape, then 3-5 decorations on it: like a package with a printed logo
    body = _colour(rng)
    kind = rng.integers(3)
    if kind == 0:
        d.rounded_rectangle([c * 0.18, c * 0.1, c * 0.82, c * 0.9], radius=int(c * 0.08), fill=body)
    elif kind == 1:
        d.ellipse([c * 0.12, c * 0.12, c * 0.88, c * 0.88], fill=body)
    else:
        d.polygon(_polygon(rng, c / 2, c / 2, c * 0.42, int(rng.integers(3, 7))), fill=body)
    for _ in range(int(rng.integers(3, 6))):
        col = _colour(rng)
        cx, cy = rng.uniform(0.3, 0.7, size=2) * c
        r = rng.uniform(0.07, 0.2) * c
        shape = rng.integers(4)
        if shape == 0:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        elif shape == 1:
            d.rectangle([cx - r, cy - r * 0.5, cx + r, cy + r * 0.5], fill=col)
        elif shape == 2:
            d.polygon(_polygon(rng, cx, cy, r, int(rng.integers(3, 6)), star=True), fill=col)
        else:
            for k in range(int(rng.integers(2, 5))):
                y = cy - r + k * r * 0.6
                d.line([cx - r, y, cx + r, y], fill=col, width=max(2, int(r * 0.2)))
    return img


def _draw_landmark(rng) -> Image.Image:
    img = Image.new("RGBA", (OBJECT_CANVAS, OBJECT_CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    c = OBJECT_CANVAS
    wall, roof, window = _colour(rng), _colour(rng), _colour(rng)
    x0, x1 = rng.uniform(0.1, 0.3) * c, rng.uniform(0.7, 0.9) * c
    top = rng.uniform(0.3, 0.55) * c
    d.rectangle([x0, top, x1, c * 0.98], fill=wall)
    if rng.random() < 0.5:
        d.polygon([(x0 - 4, top), (x1 + 4, top), ((x0 + x1) / 2, top - rng.uniform(0.15, 0.3) * c)], fill=roof)
    else:
        r = (x1 - x0) * rng.uniform(0.25, 0.45)
        d.pieslice([(x0 + x1) / 2 - r, top - r, (x0 + x1) / 2 + r, top + r], 180, 360, fill=roof)
    if rng.random() < 0.6:  # a tower
        tx = rng.uniform(x0, x1 - 14)
        d.rectangle([tx, top - rng.uniform(0.15, 0.28) * c, tx + 14, top], fill=roof)
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 6))
    for i in range(rows):
        for j in range(cols):
            wx = x0 + (j + 0.5) * (x1 - x0) / cols
            wy = top + (i + 0.6) * (c * 0.98 - top) / (rows + 0.5)
            w = (x1 - x0) / cols * 0.25
            d.rectangle([wx - w, wy - w * 1.4, wx + w, wy + w * 1.4], fill=window)
    return img


def _background(rng, size, landmark: bool) -> Image.Image:
    w, h = size
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    t = np.linspace(0, 1, h)[:, None, None]
    arr = a * (1 - t) + b * t
    arr = np.broadcast_to(arr, (h, w, 3)).copy()
    if landmark:  # ground below a horizon
        horizon = int(h * rng.uniform(0.65, 0.9))
        arr[horizon:] = np.array(_colour(rng), float)
    arr += rng.normal(0, 6, size=arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):  # clutter
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 20)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_colour(rng))
    return img


def render_view(obj: Image.Image, rng: np.random.Generator, spec: DemoSpec, landmark: bool) -> Image.Image:
    """One photo of `obj`: new background, pose, scale, crop and colour."""
    w = int(rng.integers(spec.min_side, spec.max_side + 1))
    h = int(np.clip(w * rng.uniform(0.7, 1.4), spec.min_side, spec.max_side))
    canvas = _background(rng, (w, h), landmark)
    angle = rng.uniform(-8, 8) if landmark else rng.uniform(-35, 35)
    scale = rng.uniform(0.55, 0.95) * min(w, h) / OBJECT_CANVAS
    side = max(8, int(OBJECT_CANVAS * scale))
    o = obj.rotate(angle, resample=Image.BICUBIC, expand=True).resize((side, side), Image.BICUBIC)
    ox = int(rng.uniform(0, max(1, w - side)))
    oy = int(rng.uniform(0, max(1, h - side))) if not landmark else max(0, h - side - int(rng.uniform(0, h * 0.1)))
    canvas.paste(o, (ox, oy), o)
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.75, 1.25))
    canvas = ImageEnhance.Contrast(canvas).enhance(rng.uniform(0.75, 1.25))
    canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return canvas


def gldv2_id(n: int, seed: int) -> str:
    """A 16-hex-character image id, like GLDv2's."""
    return hashlib.sha1(f"gldv2:{seed}:{n}".encode()).hexdigest()[:16]


def write_demo_sources(root: str | Path, spec: DemoSpec = DemoSpec()) -> dict[str, Path]:
    """Write `root/products10k` (train.csv + train/) and `root/gldv2` (train.csv + train/a/b/c/).

    Idempotent: an existing, complete tree with the same spec is left as it is.
    """
    root = Path(root)
    marker = root / ".demo_spec"
    roots = {"products10k": root / "products10k", "gldv2": root / "gldv2"}
    if marker.is_file() and marker.read_text() == repr(spec):
        return roots
    for path in roots.values():
        (path / "train").mkdir(parents=True, exist_ok=True)

    rows = []
    for cls in range(spec.products_classes):
        obj = _draw_product(_rng(spec.seed, "product", cls))
        group = cls % 7  # Products-10K's coarse category column
        for v in range(spec.views_per_class):
            name = f"{cls * spec.views_per_class + v}.jpg"
            img = render_view(obj, _rng(spec.seed, "product-view", cls, v), spec, landmark=False)
            img.save(roots["products10k"] / "train" / name, quality=92)
            rows.append((name, cls, group))
    with (roots["products10k"] / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("name", "class", "group"), *rows])

    rows = []
    for cls in range(spec.landmark_classes):
        landmark_id = 1000 + 7 * cls  # sparse ids, as in GLDv2
        obj = _draw_landmark(_rng(spec.seed, "landmark", cls))
        for v in range(spec.views_per_class):
            image_id = gldv2_id(cls * spec.views_per_class + v, spec.seed)
            folder = roots["gldv2"] / "train" / image_id[0] / image_id[1] / image_id[2]
            folder.mkdir(parents=True, exist_ok=True)
            img = render_view(obj, _rng(spec.seed, "landmark-view", cls, v), spec, landmark=True)
            img.save(folder / f"{image_id}.jpg", quality=92)
            rows.append((image_id, landmark_id))
    with (roots["gldv2"] / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "landmark_id"), *rows])

    marker.write_text(repr(spec))
    return roots
