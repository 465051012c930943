"""Data-prep: sources in their real layouts -> sampled, labelled, sharded TFRecords + manifest.

One global label space: each source's training classes take the next block of labels (an offset
per source, as the seed recipe's ImageNet 0-999 / Products-10K 1000-... layout). Whole classes
are held out per source as a validation split: queries, index and a Kaggle-format solution CSV.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from guie_nb.data.gldv2 import read_gldv2
from guie_nb.data.images import BadImage, process_image
from guie_nb.data.products10k import read_products10k
from guie_nb.data.records import SourceError, SourceImage
from guie_nb.data.tfrecords import serialize, write_shard
from guie_nb.metrics import write_solution

READERS: dict[str, Callable[..., list[SourceImage]]] = {
    "products10k": read_products10k,
    "gldv2": read_gldv2,
}


@dataclass
class SourceSpec:
    """One entry of the notebook's `sources` parameter."""

    kind: str
    root: str
    name: str = ""  # defaults to `kind`; must be unique
    images_per_class: int = 50
    max_classes: int | None = None  # keep the classes with the most images
    min_images_per_class: int = 2
    val_classes: int = 0  # whole classes held out for validation
    queries_per_class: int = 1
    options: dict = field(default_factory=dict)  # passed to the reader (csv_name, image_dir, ...)

    def __post_init__(self):
        if self.kind not in READERS:
            raise SourceError(f"unknown source kind {self.kind!r}; known: {sorted(READERS)}")
        self.name = self.name or self.kind
        if self.images_per_class < 1 or self.min_images_per_class < 1:
            raise SourceError(f"{self.name}: images_per_class and min_images_per_class must be >= 1")
        if self.queries_per_class < 1:
            raise SourceError(f"{self.name}: queries_per_class must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "SourceSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SourceError(f"source entry {d!r}: unknown key(s) {unknown}; known: {sorted(known)}")
        if "kind" not in d or "root" not in d:
            raise SourceError(f"source entry {d!r}: needs 'kind' and 'root'")
        return cls(**d)


@dataclass
class Selection:
    train: dict[str, list[SourceImage]]  # class -> images
    val: dict[str, list[SourceImage]]
    skipped: list[dict]


def select(images: list[SourceImage], spec: SourceSpec, seed: int) -> Selection:
    """Drop duplicates and small classes, keep the biggest classes, hold out val classes, sample."""
    skipped, seen = [], set()
    by_class: dict[str, list[SourceImage]] = defaultdict(list)
    for img in images:
        if img.image_id in seen:
            skipped.append({"path": str(img.path), "reason": "duplicate row"})
            continue
        seen.add(img.image_id)
        by_class[img.label].append(img)
    rng = random.Random(f"{seed}:{spec.name}")
    classes = sorted(by_class)
    rng.shuffle(classes)  # seeded tie-break among equal counts
    kept = [c for c in classes if len(by_class[c]) >= spec.min_images_per_class]
    for c in classes:
        if len(by_class[c]) < spec.min_images_per_class:
            skipped += [{"path": str(i.path), "reason": "class below min_images_per_class"} for i in by_class[c]]
    kept.sort(key=lambda c: -len(by_class[c]))  # stable: keeps the seeded order within ties
    if spec.max_classes is not None:
        kept = kept[: spec.max_classes]
    # a validation class needs its queries plus at least one index image
    candidates = [c for c in kept if min(len(by_class[c]), spec.images_per_class) > spec.queries_per_class]
    if spec.val_classes > len(candidates) or spec.val_classes >= len(kept):
        raise SourceError(f"{spec.name}: val_classes={spec.val_classes} is too many: {len(kept)} classes "
                          f"qualify, {len(candidates)} of them with more than queries_per_class images")
    val_set = set(rng.sample(candidates, spec.val_classes))

    def sample(c: str) -> list[SourceImage]:
        imgs = sorted(by_class[c], key=lambda i: i.image_id)
        return random.Random(f"{seed}:{spec.name}:{c}").sample(imgs, min(len(imgs), spec.images_per_class))

    return Selection(
        train={c: sample(c) for c in kept if c not in val_set},
        val={c: sample(c) for c in sorted(val_set)},
        skipped=skipped,
    )


def _versions() -> dict[str, str]:
    import PIL
    import tensorflow as tf

    import guie_nb

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "pillow": PIL.__version__,
            "guie_nb": guie_nb.__version__}


def prepare(
    sources: list[dict],
    out_dir: str | Path,
    *,
    max_side: int = 512,
    images_per_shard: int = 1000,
    jpeg_quality: int = 90,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run data-prep; returns the manifest (also written to `out_dir/manifest.json`)."""
    specs = [SourceSpec.from_dict(s) for s in sources]
    if not specs:
        raise SourceError("no sources given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SourceError(f"source names must be unique, got {names}; set 'name' per entry")
    listed = {s.name: READERS[s.kind](s.root, source=s.name, **s.options) for s in specs}  # fail fast
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    skipped: list[dict] = []
    train_examples: list[bytes] = []
    queries: list[bytes] = []
    index: list[bytes] = []
    solution: dict[str, list[str]] = {}
    query_source: dict[str, str] = {}
    per_source, label_maps, offset = {}, {}, 0

    def encode(img: SourceImage) -> bytes | None:
        try:
            return process_image(img.path, max_side, jpeg_quality)
        except BadImage as e:
            skipped.append({"path": str(img.path), "reason": str(e)})
            return None

    bar = _progress(progress)
    for spec in specs:
        sel = select(listed[spec.name], spec, seed)
        skipped += sel.skipped
        labels = {c: offset + i for i, c in enumerate(sorted(sel.train, key=_natural))}
        written = 0
        for c, imgs in sel.train.items():
            for img in imgs:
                data = encode(img)
                bar.update()
                if data is not None:
                    train_examples.append(serialize(data, labels[c], spec.name, img.uid))
                    written += 1
        val_written = 0
        for c, imgs in sel.val.items():
            encoded = [(img, encode(img)) for img in imgs]
            bar.update(len(imgs))
            encoded = [(img, d) for img, d in encoded if d is not None]
            if len(encoded) <= spec.queries_per_class:
                skipped += [{"path": str(i.path), "reason": "validation class too small after decoding"}
                            for i, _ in encoded]
                continue
            q, rest = encoded[: spec.queries_per_class], encoded[spec.queries_per_class:]
            for img, d in q:
                queries.append(serialize(d, -1, spec.name, img.uid))
                solution[img.uid] = [i.uid for i, _ in rest]
                query_source[img.uid] = spec.name
            index += [serialize(d, -1, spec.name, i.uid) for i, d in rest]
            val_written += len(encoded)
        per_source[spec.name] = {
            "kind": spec.kind, "root": str(spec.root), "images_listed": len(listed[spec.name]),
            "train_classes": len(labels), "train_images": written, "val_classes": len(sel.val),
            "val_images": val_written, "label_offset": offset,
        }
        label_maps[spec.name] = labels
        offset += len(labels)
    bar.close()

    random.Random(seed).shuffle(train_examples)
    n_shards = max(1, -(-len(train_examples) // images_per_shard))
    train_files = []
    for k in range(n_shards):
        name = f"train-{k:05d}-of-{n_shards:05d}.tfrec"
        write_shard(out / name, train_examples[k * images_per_shard:(k + 1) * images_per_shard])
        train_files.append(name)
    val_files = {}
    if solution:
        write_shard(out / "val-queries.tfrec", queries)
        write_shard(out / "val-index.tfrec", index)
        # alternate Public/Private like the competition's split, deterministically
        usage = {q: ("Public" if i % 2 == 0 else "Private") for i, q in enumerate(sorted(solution))}
        write_solution(out / "solution.csv", solution, usage)
        val_files = {"queries": "val-queries.tfrec", "index": "val-index.tfrec", "solution": "solution.csv"}

    manifest = {
        "parameters": {"sources": [asdict(s) for s in specs], "max_side": max_side,
                       "images_per_shard": images_per_shard, "jpeg_quality": jpeg_quality, "seed": seed},
        "num_classes": offset,
        "images_written": len(train_examples) + len(queries) + len(index),
        "train_images": len(train_examples),
        "train_files": train_files,
        "val": {**val_files, "num_queries": len(queries), "num_index": len(index),
                "query_source": query_source},
        "sources": per_source,
        "label_maps": label_maps,
        "skipped": skipped,
        "versions": _versions(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _natural(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(desc="images", unit="img", disable=not enabled)


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {data_dir}: run the data-prep notebook first")
    return json.loads(path.read_text())
