"""Data-prep: sources in their real layouts -> sampled, labelled, sharded TFRecords + manifest.

One global label space: each source's training classes take the next block of labels (an offset
per source, as the seed recipe's ImageNet 0-999 / Products-10K 1000-... layout). Whole classes
are held out per source as a validation split: queries, index and a Kaggle-format solution CSV.

Order of work: read every source (a wrong root or missing column fails here, before anything is
written), select, plan every output file, estimate the output size (fails above the limit), then
write the files over all cores (`shards.py`), resuming where an earlier run stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from guie_nb.data.images import BadImage, process_bytes
from guie_nb.data.imagenet import imagenet_tfrecord_files
from guie_nb.data.records import SourceError, SourceImage
from guie_nb.data.shards import PARTS, AtomicWriter, ImageSettings, Task, make_pool, read_image_bytes, \
    remove_leftovers, run_tasks
from guie_nb.data.sources import READERS, SourceSpec  # noqa: F401  (SourceSpec: public API)
from guie_nb.metrics import write_solution

KAGGLE_OUTPUT_LIMIT_GB = 20.0
RECORD_OVERHEAD = 120  # bytes per record besides the JPEG: framing, keys, label, source, id
FORMAT_VERSION = 2


class OutputTooLarge(SourceError):
    """The estimated output does not fit the output limit."""


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
    for c in sorted(by_class):
        if len(by_class[c]) < spec.min_images_per_class:
            skipped += [{"path": str(i.path), "reason": "class below min_images_per_class"} for i in by_class[c]]
    kept.sort(key=lambda c: -len(by_class[c]))  # stable: keeps the seeded order within ties
    if spec.max_classes is not None:
        kept = kept[: spec.max_classes]
    # a validation class needs its queries plus at least one index image
    candidates = [c for c in kept if min(len(by_class[c]), spec.images_per_class) > spec.queries_per_class]
    if spec.val_classes > len(candidates) or (spec.val_classes and spec.val_classes >= len(kept)):
        raise SourceError(f"{spec.name}: val_classes={spec.val_classes} is too many: {len(kept)} classes "
                          f"qualify, {len(candidates)} of them with more than queries_per_class images")
    val_set = set(rng.sample(candidates, spec.val_classes))

    def sample(c: str) -> list[SourceImage]:
        imgs = sorted(by_class[c], key=lambda i: (i.image_id, i.offset))
        return random.Random(f"{seed}:{spec.name}:{c}").sample(imgs, min(len(imgs), spec.images_per_class))

    return Selection(
        train={c: sample(c) for c in sorted(kept, key=_natural) if c not in val_set},
        val={c: sample(c) for c in sorted(val_set, key=_natural)},
        skipped=skipped,
    )


def plan(specs: list[SourceSpec], selections: dict[str, Selection], settings: ImageSettings, out: Path,
         images_per_shard: int, seed: int) -> tuple[list[Task], list[Task], dict[str, dict[str, int]]]:
    """Training shards (one shuffled stream cut every `images_per_shard`) and validation parts."""
    train, val, label_maps, offset = [], [], {}, 0
    for spec in specs:
        sel = selections[spec.name]
        labels = {c: offset + i for i, c in enumerate(sel.train)}
        label_maps[spec.name] = labels
        offset += len(labels)
        train += [(img, labels[c]) for c, imgs in sel.train.items() for img in imgs]
        for c, imgs in sel.val.items():
            val.append([(img, f"{spec.name}/{c}", spec.queries_per_class) for img in imgs])
    random.Random(seed).shuffle(train)
    n = max(1, -(-len(train) // images_per_shard))
    train_tasks = [Task(f"train-{k:05d}-of-{n:05d}.tfrec", "train",
                        train[k * images_per_shard:(k + 1) * images_per_shard], settings, str(out)) for k in range(n)]
    val_tasks, part = [], []
    for members in val:  # whole classes per part, about images_per_shard images each
        part += members
        if len(part) >= images_per_shard:
            val_tasks.append(part)
            part = []
    if part:
        val_tasks.append(part)
    val_tasks = [Task(f"val-{k:05d}", "val", items, settings, str(out)) for k, items in enumerate(val_tasks)]
    return train_tasks, val_tasks, label_maps


def estimate_bytes(tasks: list[Task], settings: ImageSettings, seed: int, samples: int = 24) -> int:
    """Output size from a seeded sample of the planned images, processed as the workers will."""
    items = [it[0] for t in tasks for it in t.items]
    if not items:
        return 0
    sizes = []
    for img in random.Random(seed).sample(items, min(samples, len(items))):
        try:
            sizes.append(len(process_bytes(read_image_bytes(img), settings.max_side, settings.quality)))
        except BadImage:
            pass
    mean = sum(sizes) / len(sizes) if sizes else 0
    return int(len(items) * (mean + RECORD_OVERHEAD))


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("pillow", "numpy", "google-crc32c", "tensorflow", "guie-nb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def prepare(
    sources: list[dict],
    out_dir: str | Path,
    *,
    max_side: int = 512,
    images_per_shard: int = 1000,
    jpeg_quality: int = 90,
    seed: int = 0,
    processes: int | None = None,
    max_output_gb: float = KAGGLE_OUTPUT_LIMIT_GB,
    progress: bool = True,
) -> dict:
    """Run data-prep; returns the manifest (also written to `out_dir/manifest.json`).

    `processes`: worker processes (None: all cores; 1: in this process). Rerun with the same
    arguments to resume: finished files are kept, the rest are written.
    """
    if not isinstance(sources, (list, tuple)) or not sources:
        raise SourceError("sources must be a non-empty list of {'kind': ..., 'root': ...} entries")
    specs = [SourceSpec.from_dict(s) for s in sources]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SourceError(f"source names must be unique, got {names}; set 'name' per entry")
    if max_side < 16 or images_per_shard < 1 or not 1 <= jpeg_quality <= 100:
        raise ValueError("need max_side >= 16, images_per_shard >= 1, 1 <= jpeg_quality <= 100")
    processes = processes or os.cpu_count() or 1
    settings = ImageSettings(max_side, jpeg_quality)
    out = Path(out_dir)

    pools = []

    def pool(n_jobs: int):
        """Worker processes, started on first use (not at all for one core or one job)."""
        if processes <= 1 or n_jobs <= 1:
            return None
        if not pools:
            pools.append(make_pool(min(processes, n_jobs)))
        return pools[0]

    try:
        listings = {}
        for s in specs:  # every source is read and checked before anything is written
            p = pool(len(imagenet_tfrecord_files(s.root, s.options.get("pattern", "train-*")))) if s.kind == "imagenet_tfrecord" else None
            listings[s.name] = s.read(map_fn=p.imap if p else map)
        selections = {s.name: select(listings[s.name].images, s, seed) for s in specs}
        train_tasks, val_tasks, label_maps = plan(specs, selections, settings, out, images_per_shard, seed)
        tasks = train_tasks + val_tasks
        estimate = estimate_bytes(tasks, settings, seed)
        n_images = sum(len(t.items) for t in tasks)
        if progress:
            print(f"data-prep: {n_images} images planned in {len(tasks)} files, estimated output "
                  f"{estimate / 1e9:.2f} GB (limit {max_output_gb:g} GB)")
        if estimate > max_output_gb * 1e9:
            raise OutputTooLarge(
                f"estimated output {estimate / 1e9:.1f} GB is over the {max_output_gb:g} GB limit (Kaggle keeps "
                f"20 GB of notebook output): lower images_per_class, max_classes, max_side or jpeg_quality")
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, tasks)
        markers = run_tasks(tasks, pool, progress)
    finally:
        for p in pools:
            p.terminate()
            p.join()

    train_markers, val_markers = markers[: len(train_tasks)], markers[len(train_tasks):]
    val = _merge_val(out, val_tasks, val_markers)
    skipped = [e for s in specs for e in listings[s.name].skipped + selections[s.name].skipped]
    skipped += [e for m in markers for e in m["skipped"]]
    counts: dict[int, int] = defaultdict(int)
    for m in train_markers:
        for label, n in m["label_counts"].items():
            counts[int(label)] += n
    per_source, offset = {}, 0
    for s in specs:
        labels, sel = label_maps[s.name], selections[s.name]
        per_source[s.name] = {
            "kind": s.kind, "root": s.root, "images_listed": len(listings[s.name].images),
            "train_classes": len(labels), "train_images": sum(counts[g] for g in labels.values()),
            "val_classes": len(sel.val), "val_images": val["images_by_source"].get(s.name, 0),
            "label_offset": offset, "class_counts": {c: counts[g] for c, g in labels.items()},
        }
        offset += len(labels)
    parameters = {"sources": [asdict(s) for s in specs], "max_side": max_side, "images_per_shard": images_per_shard,
                  "jpeg_quality": jpeg_quality, "seed": seed, "format_version": FORMAT_VERSION}
    params_hash = hashlib.sha256(json.dumps([parameters, [m["hash"] for m in markers]]).encode()).hexdigest()
    train_images = sum(m["records"] for m in train_markers)
    manifest = {
        "parameters": parameters,
        "params_hash": params_hash,
        "num_classes": offset,
        "images_written": train_images + val["num_queries"] + val["num_index"],
        "train_images": train_images,
        "train_files": [t.name for t in train_tasks],
        "val": {k: v for k, v in val.items() if k != "images_by_source"},
        "sources": per_source,
        "label_maps": label_maps,
        "estimated_bytes": estimate,
        "output_bytes": sum(sum(m["sizes"].values()) for m in markers),
        "skipped": skipped,
        "skipped_counts": _count_reasons(skipped),
        "versions": _versions(),
    }
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return manifest


def _merge_val(out: Path, tasks: list[Task], markers: list[dict]) -> dict:
    """Concatenate the validation parts (TFRecord files concatenate byte-wise) and write the solution."""
    solution, query_source, images_by_source = {}, {}, defaultdict(int)
    for m in markers:
        for qid, ids in m["solution"]:
            solution[qid] = ids
        query_source.update(m["query_source"])
        for source, n in m["by_source"].items():
            images_by_source[source] += n
    for f in ("val-queries.tfrec", "val-index.tfrec", "solution.csv"):
        (out / f).unlink(missing_ok=True)
    if not solution:
        return {"num_queries": 0, "num_index": 0, "query_source": {}, "images_by_source": {}}
    counts = {}
    for role in ("queries", "index"):
        w = AtomicWriter(out / f"val-{role}.tfrec")
        for t in tasks:
            w.write_framed((out / PARTS / f"{t.name}-{role}.tfrec").read_bytes())
        w.commit()
    counts["num_queries"] = len(solution)
    counts["num_index"] = len({i for ids in solution.values() for i in ids})
    # alternate Public/Private like the competition's split, deterministically
    usage = {q: ("Public" if i % 2 == 0 else "Private") for i, q in enumerate(sorted(solution))}
    tmp = out / ".solution.csv.tmp"
    write_solution(tmp, solution, usage)
    os.replace(tmp, out / "solution.csv")
    return {"queries": "val-queries.tfrec", "index": "val-index.tfrec", "solution": "solution.csv", **counts,
            "query_source": query_source, "images_by_source": dict(images_by_source)}


def _count_reasons(skipped: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for e in skipped:
        counts[e["reason"].split(" (")[0]] += 1
    return dict(sorted(counts.items()))


def _natural(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {data_dir}: run the data-prep notebook first")
    return json.loads(path.read_text())
