"""Data-prep: sources in their real layouts -> sampled, labelled, sharded TFRecords + manifest.

One global label space: each source's training classes take the next block of labels (an offset
per source, as the seed recipe's ImageNet 0-999 / Products-10K 1000-... layout). Whole classes
are held out per source as a validation split: queries, index and a Kaggle-format solution CSV.
Validation-only sources (`val_sources`, e.g. GPR1200 as a multi-domain set) add classes to that
split alone, each source (or GPR1200 domain) scored as its own domain.

Order of work: read every source (a wrong root or missing column fails here, before anything is
written), drop the listed files that are not on disk (one parallel pass over the folders, counted
in the manifest: a partly downloaded dataset ranks and samples only what it has), select, plan
every output file, estimate the output size (all of it `plan_data_prep`, which notebook 01's dry
run calls too), check the estimate against the limit, then write the files over all cores
(`shard_writer.py`), resuming where an earlier run stopped.

Data that does not fit one Kaggle kernel (20 GB of output, 12 h) is split over N kernels:
`prepare(..., num_shards=N, shard_index=i)` reads and selects exactly as one kernel would, then
writes only part i's contiguous run of training shards (part 0 also writes the validation split).
`load_manifest([dir_0, ..., dir_N-1])` checks the parts belong together and merges them into one
manifest whose file references are absolute paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from guie_nb.data.images import BadImage, process_bytes
from guie_nb.data.readers.imagenet import imagenet_tfrecord_files
from guie_nb.data.source_images import Listing, SourceError, SourceImage
from guie_nb.data.shard_writer import PARTS, AtomicWriter, ImageSettings, Task, make_pool, read_image_bytes, \
    remove_leftovers, run_tasks
from guie_nb.data.sources import READERS, SourceSpec  # noqa: F401  (SourceSpec: public API)
from guie_nb.metrics import write_solution

KAGGLE_OUTPUT_LIMIT_GB = 20.0
DEFAULT_JPEG_QUALITY = 90
ESTIMATE_SAMPLES = 24  # images processed to estimate the output size
RECORD_OVERHEAD = 120  # bytes per record besides the JPEG: framing, keys, label, source, id
FORMAT_VERSION = 2
EXISTENCE_THREADS = 32  # folder listings run in threads: I/O-bound, and Kaggle's /kaggle/input is a network mount
NOT_ON_DISK = "file not on disk"
MISSING_EXAMPLES = 20  # per source: the manifest lists this many missing files, and counts them all


class OutputTooLarge(SourceError):
    """The estimated output does not fit the output limit."""


def _list_folder(folder: str) -> frozenset[str]:
    try:
        with os.scandir(folder) as it:
            return frozenset(e.name for e in it if e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()


def keep_existing(listings: dict[str, Listing], threads: int = EXISTENCE_THREADS) -> dict:
    """Drop listed image files that are not on disk, in place; returns the pass's counts.

    One pass for all sources: every folder that holds a listed file is listed once (`os.scandir`,
    in `threads` threads), so the cost is one directory read per folder, not one `stat` per file.
    Images inside TFRecord files (`offset >= 0`) were found by reading them and are kept. Each
    listing gets `skipped` entries (reason "file not on disk") for its first MISSING_EXAMPLES
    missing files and `missing` = how many there were. Returns `{"files_checked",
    "files_missing", "folders_listed", "threads"}` (no timing: a rerun's manifest is identical).
    """
    folders = sorted({os.path.dirname(i.path) for lst in listings.values() for i in lst.images if i.offset < 0})
    with ThreadPoolExecutor(max(1, min(threads, len(folders)))) as ex:
        present = dict(zip(folders, ex.map(_list_folder, folders)))
    checked = missing_total = 0
    for lst in listings.values():
        kept, missing = [], []
        for img in lst.images:
            if img.offset >= 0:
                kept.append(img)
                continue
            checked += 1
            (kept if os.path.basename(img.path) in present[os.path.dirname(img.path)] else missing).append(img)
        lst.images = kept
        lst.missing = len(missing)
        lst.skipped += [{"path": str(i.path), "reason": NOT_ON_DISK} for i in missing[:MISSING_EXAMPLES]]
        missing_total += len(missing)
    return {"files_checked": checked, "files_missing": missing_total, "folders_listed": len(folders),
            "threads": threads}


def read_sources(specs: list["SourceSpec"], map_fn_for=lambda spec: map) -> tuple[dict[str, Listing], dict]:
    """Every source's listing (read in order, so a bad root fails before anything is written),
    then the existence pass (`keep_existing`); returns the listings and the pass's counts.
    `map_fn_for(spec)` gives a reader that takes one (the TFRecord reader) its parallel map.
    A reader's SourceError is raised again prefixed with the source's name."""
    listings = {}
    for s in specs:
        try:
            listings[s.name] = s.read(map_fn=map_fn_for(s))
        except SourceError as err:
            raise SourceError(f"source {s.name}: {err}") from err
        listings[s.name].listed = len(listings[s.name].images)
    return listings, keep_existing(listings)


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

    def sample(c: str) -> list[SourceImage]:
        imgs = sorted(by_class[c], key=lambda i: (i.image_id, i.offset))
        return random.Random(f"{seed}:{spec.name}:{c}").sample(imgs, min(len(imgs), spec.images_per_class))

    if spec.val_only:  # every kept class that can give its queries and an index image
        val = [c for c in kept if min(len(by_class[c]), spec.images_per_class) > spec.queries_per_class]
        for c in sorted(set(kept) - set(val)):
            skipped += [{"path": str(i.path), "reason": "validation class with no index image after its queries"}
                        for i in by_class[c]]
        if not val:
            raise SourceError(f"{spec.name}: validation-only source with no class of more than "
                              f"queries_per_class={spec.queries_per_class} images")
        return Selection(train={}, val={c: sample(c) for c in sorted(val, key=_natural)}, skipped=skipped)
    # a validation class needs its queries plus at least one index image
    candidates = [c for c in kept if min(len(by_class[c]), spec.images_per_class) > spec.queries_per_class]
    if spec.val_classes > len(candidates) or (spec.val_classes and spec.val_classes >= len(kept)):
        raise SourceError(f"{spec.name}: val_classes={spec.val_classes} is too many: {len(kept)} classes "
                          f"qualify, {len(candidates)} of them with more than queries_per_class images")
    val_set = set(rng.sample(candidates, spec.val_classes))
    return Selection(
        train={c: sample(c) for c in sorted(kept, key=_natural) if c not in val_set},
        val={c: sample(c) for c in sorted(val_set, key=_natural)},
        skipped=skipped,
    )


def plan_files(specs: list[SourceSpec], selections: dict[str, Selection], settings: ImageSettings, out: Path,
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


def estimate_bytes(tasks: list[Task], settings: ImageSettings, seed: int, samples: int = ESTIMATE_SAMPLES) -> int:
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


def source_specs(sources: list[dict], val_sources: list[dict] | None = None) -> list[SourceSpec]:
    """The checked entries of `sources` then of `val_sources` (each marked `val_only`) as specs.

    Raises SourceError for an empty or non-list `sources`, a non-list `val_sources`, a bad entry
    (`SourceSpec.from_dict`), only validation-only sources, or two entries with one name."""
    if not isinstance(sources, (list, tuple)) or not sources:
        raise SourceError("sources must be a non-empty list of {'kind': ..., 'root': ...} entries")
    if val_sources is not None and not isinstance(val_sources, (list, tuple)):
        raise SourceError("val_sources must be a list of {'kind': ..., 'root': ...} entries (or None)")
    specs = [SourceSpec.from_dict(s) for s in sources] + \
        [SourceSpec.from_dict({**s, "val_only": True}) if isinstance(s, dict) else SourceSpec.from_dict(s)
         for s in val_sources or ()]
    if all(s.val_only for s in specs):
        raise SourceError("every source is validation-only: data-prep needs at least one training source")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SourceError(f"source names must be unique, got {names}; set 'name' per entry")
    return specs


@dataclass
class DataPrepPlan:
    """Everything a data-prep run (or one part of a split run) will write, fixed before any image is
    encoded: `prepare` writes exactly this, and the dry run (`guie_nb.preflight`) reports it."""
    specs: list[SourceSpec]
    listings: dict[str, Listing]  # per source, after the existence pass
    existence: dict  # `keep_existing`'s counts
    selections: dict[str, Selection]
    label_maps: dict[str, dict[str, int]]  # source -> class -> global label
    label_space: str  # what every part of a split run must agree on (`_label_space`)
    train_shards_total: int  # training shards of the whole run, all parts
    train_range: range  # this part's run of them (`part_range`)
    train_tasks: list[Task]  # this part's training shards
    val_tasks: list[Task]  # the validation parts; empty unless this is part 0
    estimated_bytes: int  # of this part's files (`estimate_bytes`)
    estimate_seconds: float  # wall seconds `estimate_bytes` took on its samples
    estimate_samples: int
    tasks: list[Task] = field(init=False)  # this part's files: training shards, then validation parts

    def __post_init__(self) -> None:
        self.tasks = self.train_tasks + self.val_tasks

    @property
    def images(self) -> int:
        """Images planned in this part's files."""
        return sum(len(t.items) for t in self.tasks)

    @property
    def train_images(self) -> int:
        return sum(len(t.items) for t in self.train_tasks)


def plan_data_prep(specs: list[SourceSpec], settings: ImageSettings, out: Path, *, images_per_shard: int,
                   seed: int, num_shards: int = 1, shard_index: int = 0, map_fn_for=lambda spec: map,
                   progress: bool = False) -> DataPrepPlan:
    """Read every source (`read_sources`: listings, then the existence pass), select (`select`), plan
    every file of the whole run (`plan_files`), take part `shard_index`'s share (`part_range`; the
    validation split goes to part 0) and estimate its output (`estimate_bytes`). Nothing is written.

    `map_fn_for(spec)` gives a reader that takes one its parallel map; `progress` prints how many
    listed files are not on disk. Raises SourceError (a bad root, listing or selection) and
    ValueError (a bad `num_shards`/`shard_index`).
    """
    _check_part(num_shards, shard_index)
    listings, existence = read_sources(specs, map_fn_for)
    if progress and existence["files_missing"]:
        print(f"data-prep: {existence['files_missing']} of {existence['files_checked']} listed files are not "
              f"on disk; ranking and sampling use the files that are")
    selections = {s.name: select(listings[s.name].images, s, seed) for s in specs}
    all_train, val_tasks, label_maps = plan_files(specs, selections, settings, out, images_per_shard, seed)
    label_space = _label_space(specs, selections, label_maps, all_train + val_tasks, settings, images_per_shard, seed)
    mine = part_range(len(all_train), num_shards, shard_index)
    train_tasks = all_train[mine.start:mine.stop]
    if shard_index != 0:  # the validation split is written once, by part 0
        val_tasks = []
    start = time.perf_counter()
    estimate = estimate_bytes(train_tasks + val_tasks, settings, seed)
    seconds = time.perf_counter() - start
    samples = min(ESTIMATE_SAMPLES, sum(len(t.items) for t in train_tasks + val_tasks))
    return DataPrepPlan(specs, listings, existence, selections, label_maps, label_space, len(all_train), mine,
                        train_tasks, val_tasks, estimate, seconds, samples)


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
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    seed: int = 0,
    processes: int | None = None,
    max_output_gb: float = KAGGLE_OUTPUT_LIMIT_GB,
    progress: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
    val_sources: list[dict] | None = None,
) -> dict:
    """Run data-prep; returns the manifest (also written to `out_dir/manifest.json`).

    `processes`: worker processes (None: all cores; 1: in this process). Rerun with the same
    arguments to resume: finished files are kept, the rest are written.

    `num_shards` > 1 splits the output over that many parts (one Kaggle kernel each, each into
    its own `out_dir`): every part reads and selects as one run would, so all agree on the label
    space and the validation split; part `shard_index` writes only its contiguous run of the
    training shards (`part_range`), and part 0 alone writes the validation split. The part's own
    estimate is checked against `max_output_gb`. The manifest's `part` records
    `{"index", "count", "label_space"}`; `load_manifest(all part dirs)` merges the parts.
    Raises ValueError for `num_shards` < 1 or `shard_index` outside 0..num_shards-1.

    `val_sources`: entries like `sources`' whose data goes to the validation split only (every
    kept class a validation class, `max_classes` caps them; no label, no training image); an entry
    of `sources` with `"val_only": True` is the same. Each val-only source is its own domain in the
    validation scores (`map5_<name>`; GPR1200 also per domain, `map5_gpr1200_landmarks`, ...).

    Listed files that are not on disk are dropped before selection (`keep_existing`): the
    manifest's `existence_check` has the pass's counts, each source its `files_missing`.
    """
    _check_part(num_shards, shard_index)
    specs = source_specs(sources, val_sources)
    if max_side < 16 or images_per_shard < 1 or not 1 <= jpeg_quality <= 100:
        raise ValueError("need max_side >= 16, images_per_shard >= 1, 1 <= jpeg_quality <= 100")
    processes = processes or os.cpu_count() or 1
    settings = ImageSettings(max_side, jpeg_quality)
    out = Path(out_dir)

    pools = []

    def pool(n_jobs: int):
        """Worker processes, started once (not at all for one core or one job)."""
        if processes <= 1 or n_jobs <= 1:
            return None
        if not pools:
            pools.append(make_pool(min(processes, n_jobs)))
        return pools[0]

    try:
        def map_fn_for(s: SourceSpec):
            if s.kind != "imagenet_tfrecord":
                return map
            p = pool(len(imagenet_tfrecord_files(s.root, s.options.get("pattern", "train-*"))))
            return p.imap if p else map

        if processes > 1:  # start the workers now: their start-up (spawn, imports) overlaps the reading below
            pool(processes)
        plan = plan_data_prep(specs, settings, out, images_per_shard=images_per_shard, seed=seed,
                              num_shards=num_shards, shard_index=shard_index, map_fn_for=map_fn_for,
                              progress=progress)
        listings, selections, label_maps = plan.listings, plan.selections, plan.label_maps
        train_tasks, val_tasks, tasks, estimate = plan.train_tasks, plan.val_tasks, plan.tasks, plan.estimated_bytes
        which = f"part {shard_index} of {num_shards}: " if num_shards > 1 else ""
        if progress:
            mine = plan.train_range
            shards = (f" (train shards {mine.start}..{mine.stop - 1} of {plan.train_shards_total})"
                      if num_shards > 1 else "")
            print(f"data-prep: {which}{plan.images} images planned in {len(tasks)} files{shards}, estimated output "
                  f"{estimate / 1e9:.2f} GB (limit {max_output_gb:g} GB)")
        if estimate > max_output_gb * 1e9:
            raise OutputTooLarge(
                f"{which}estimated output {estimate / 1e9:.1f} GB is over the {max_output_gb:g} GB limit (Kaggle "
                f"keeps 20 GB of notebook output): lower images_per_class, max_classes, max_side or jpeg_quality, "
                f"or split the output over more kernels (num_shards={num_shards})")
        _check_not_other_part(out, plan.label_space, num_shards, shard_index)
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, tasks)
        markers = run_tasks(tasks, pool, progress)
    finally:
        for p in pools:
            p.terminate()
            p.join()

    train_markers, val_markers = markers[: len(train_tasks)], markers[len(train_tasks):]
    val = _merge_val(out, val_tasks, val_markers)
    if shard_index != 0:
        val = {"in_part": 0, "images_by_source": {}}
    # reading and selection are the same in every part: their skips are recorded once, by part 0
    skipped = [e for s in specs for e in listings[s.name].skipped + selections[s.name].skipped] \
        if shard_index == 0 else []
    skipped += [e for m in markers for e in m["skipped"]]
    counts: dict[int, int] = defaultdict(int)
    for m in train_markers:
        for label, n in m["label_counts"].items():
            counts[int(label)] += n
    per_source, offset = {}, 0
    for s in specs:
        labels, sel = label_maps[s.name], selections[s.name]
        per_source[s.name] = {
            "kind": s.kind, "root": s.root, "val_only": s.val_only, "images_listed": listings[s.name].listed,
            "files_missing": listings[s.name].missing, "images_on_disk": len(listings[s.name].images),
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
        "images_written": train_images + val.get("num_queries", 0) + val.get("num_index", 0),
        "train_images": train_images,
        "train_files": [t.name for t in train_tasks],
        "val": {k: v for k, v in val.items() if k != "images_by_source"},
        "sources": per_source,
        "label_maps": label_maps,
        "estimated_bytes": estimate,
        "output_bytes": sum(sum(m["sizes"].values()) for m in markers),
        "skipped": skipped,
        "skipped_counts": _count_reasons(skipped, per_source),
        "existence_check": plan.existence,
        "versions": _versions(),
        "part": {"index": shard_index, "count": num_shards, "label_space": plan.label_space},
    }
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return manifest


def _merge_val(out: Path, tasks: list[Task], markers: list[dict]) -> dict:
    """Concatenate the validation parts (TFRecord files concatenate byte-wise) and write the solution."""
    solution, query_source, query_domain, images_by_source = {}, {}, {}, defaultdict(int)
    for m in markers:
        for qid, ids in m["solution"]:
            solution[qid] = ids
        query_source.update(m["query_source"])
        query_domain.update(m.get("query_domain", {}))
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
            "query_source": query_source, "query_domain": query_domain, "images_by_source": dict(images_by_source)}


def _count_reasons(skipped: list[dict], per_source: dict[str, dict]) -> dict[str, int]:
    """Skips by reason; files not on disk are counted in full (`skipped` lists only examples)."""
    counts: dict[str, int] = defaultdict(int)
    for e in skipped:
        counts[e["reason"].split(" (")[0]] += 1
    missing = sum(s.get("files_missing", 0) for s in per_source.values())
    if missing:
        counts[NOT_ON_DISK] = missing
    else:
        counts.pop(NOT_ON_DISK, None)
    return dict(sorted(counts.items()))


def _natural(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _check_part(num_shards: int, shard_index: int) -> None:
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an int >= 1 (the number of parts), got {num_shards!r}")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be an int in 0..{num_shards - 1} (num_shards={num_shards}), "
                         f"got {shard_index!r}")


def part_range(n_tasks: int, num_shards: int, shard_index: int) -> range:
    """The training shards part `shard_index` writes: a contiguous run, sizes differing by at most one.

    Contiguous rather than round-robin: each part holds a readable run of the global shard names, and
    the parts' file lists concatenated in part order are the one-run list in its order, so the
    training stream over the merged parts is the one-run stream. (Each shard is already a random
    sample of the one seeded shuffle, so which shards a part gets does not bias its content.)
    """
    return range(n_tasks * shard_index // num_shards, n_tasks * (shard_index + 1) // num_shards)


def _label_space(specs: list[SourceSpec], selections: dict[str, Selection], label_maps: dict[str, dict[str, int]],
                 tasks: list[Task], settings: ImageSettings, images_per_shard: int, seed: int) -> str:
    """sha256 of everything the parts must agree on: label maps, per-class counts, seed, settings and
    the plan (which image, by id, goes to which file with which label). Source roots are left out, so
    parts may run where the same data is mounted elsewhere."""
    h = hashlib.sha256(json.dumps({
        "format_version": FORMAT_VERSION, "seed": seed, "images_per_shard": images_per_shard,
        "max_side": settings.max_side, "jpeg_quality": settings.quality,
        "sources": [{k: v for k, v in asdict(s).items() if k != "root"} for s in specs],
        "label_maps": label_maps,
        "class_counts": {n: {"train": {c: len(v) for c, v in sel.train.items()},
                             "val": {c: len(v) for c, v in sel.val.items()}} for n, sel in selections.items()},
    }, sort_keys=True).encode())
    for t in tasks:
        h.update(json.dumps([t.name, [[img.uid, *rest] for img, *rest in t.items]]).encode())
    return h.hexdigest()


def _check_not_other_part(out: Path, label_space: str, num_shards: int, shard_index: int) -> None:
    """Refuse to write a part over another part of the same split (it would delete that part's shards)."""
    try:
        part = json.loads((out / "manifest.json").read_text()).get("part") or {}
    except (OSError, ValueError):
        return
    if part.get("label_space") == label_space and part.get("count") == num_shards and part.get("index") != shard_index:
        raise ValueError(f"{out} holds part {part.get('index')} of {num_shards} of this data-prep; write part "
                         f"{shard_index} into its own out_dir (one directory per part)")


PathLike = str | os.PathLike
DataDirs = PathLike | Sequence[PathLike]


def _as_dirs(data_dir: DataDirs) -> list[Path]:
    if isinstance(data_dir, (str, os.PathLike)):
        return [Path(data_dir)]
    dirs = [Path(d) for d in data_dir]
    if not dirs:
        raise ValueError("data_dir is an empty list: give one data-prep output directory, or all of its parts")
    return dirs


def _read_manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {data_dir}: run the data-prep notebook first")
    return json.loads(path.read_text())


def load_manifest(data_dir: DataDirs) -> dict:
    """The manifest of one data-prep output directory, or of all parts of a split data-prep merged.

    One directory (or a list of one): its manifest unchanged, file references relative to it. A
    list of N part directories (any order): the parts are checked to share one label space and to
    be exactly the parts 0..N-1, then merged: `train_files` (in part order, which is the one-run
    order) and the `val` files become absolute paths, `data_dirs` lists the part directories in
    part order, counts are summed. Resolve file references with `data_path`/`train_paths`.
    Raises FileNotFoundError (a directory without manifest.json) and ValueError (a part alone,
    parts that do not belong together, missing or duplicate parts).
    """
    dirs = _as_dirs(data_dir)
    manifests = [_read_manifest(d) for d in dirs]
    if len(dirs) == 1:
        count = (manifests[0].get("part") or {}).get("count", 1)
        if count != 1:
            raise ValueError(f"{dirs[0]} is part {manifests[0]['part']['index']} of {count} of a split data-prep: "
                             f"pass all {count} part directories as a list")
        return manifests[0]
    return _merge_parts(dirs, manifests)


def _merge_parts(dirs: list[Path], manifests: list[dict]) -> dict:
    parts = [m.get("part") for m in manifests]
    where = ", ".join(f"{d} (part {p['index']} of {p['count']}, label space {p['label_space'][:12]})" if p
                      else f"{d} (no part record)" for d, p in zip(dirs, parts))
    if any(p is None for p in parts):
        raise ValueError(f"not all directories are parts of a split data-prep: {where}")
    if len({(p["count"], p["label_space"]) for p in parts}) != 1:
        raise ValueError(f"the directories are parts of different data-preps (other sources, seed or settings): "
                         f"{where}")
    count = parts[0]["count"]
    by_index: dict[int, list[Path]] = defaultdict(list)
    for d, p in zip(dirs, parts):
        by_index[p["index"]].append(d)
    missing = [i for i in range(count) if i not in by_index]
    duplicate = {i: ds for i, ds in by_index.items() if len(ds) > 1}
    if missing or duplicate:
        problems = ([f"missing part(s) {missing}"] if missing else []) + \
            [f"part {i} given twice ({', '.join(map(str, ds))})" for i, ds in sorted(duplicate.items())]
        raise ValueError(f"parts of a {count}-part data-prep: {'; '.join(problems)}; got: {where}")
    order = sorted(range(len(dirs)), key=lambda k: parts[k]["index"])
    dirs = [dirs[k].resolve() for k in order]
    manifests = [manifests[k] for k in order]
    return _merged(dirs, manifests)


def _merged(dirs: list[Path], manifests: list[dict]) -> dict:
    """Parts in index order -> one manifest (absolute file paths, summed counts)."""
    first = manifests[0]
    val = dict(first["val"])
    for key in ("queries", "index", "solution"):
        if key in val:
            val[key] = str(dirs[0] / val[key])
    sources = {}
    for name, s in first["sources"].items():
        class_counts: dict[str, int] = defaultdict(int)
        for m in manifests:
            for c, n in m["sources"][name]["class_counts"].items():
                class_counts[c] += n
        sources[name] = {**s, "train_images": sum(m["sources"][name]["train_images"] for m in manifests),
                         "val_images": sum(m["sources"][name]["val_images"] for m in manifests),
                         "class_counts": {c: class_counts[c] for c in s["class_counts"]}}
    skipped = [e for m in manifests for e in m["skipped"]]

    def total(key: str) -> int:
        return sum(m[key] for m in manifests)

    return {
        **first,
        "params_hash": hashlib.sha256(json.dumps([m["params_hash"] for m in manifests]).encode()).hexdigest(),
        "images_written": total("images_written"),
        "train_images": total("train_images"),
        "train_files": [str(d / f) for d, m in zip(dirs, manifests) for f in m["train_files"]],
        "val": val,
        "sources": sources,
        "estimated_bytes": total("estimated_bytes"),
        "output_bytes": total("output_bytes"),
        "skipped": skipped,
        "skipped_counts": _count_reasons(skipped, sources),
        "part": {k: v for k, v in first["part"].items() if k != "index"},
        "data_dirs": [str(d) for d in dirs],
        "parts": [{"dir": str(d), "train_files": len(m["train_files"]), "train_images": m["train_images"],
                   "estimated_bytes": m["estimated_bytes"], "output_bytes": m["output_bytes"]}
                  for d, m in zip(dirs, manifests)],
    }


def data_path(data_dir: DataDirs, name: str | os.PathLike) -> Path:
    """Where a manifest's file reference lives: absolute (a merged manifest) as is, else under the
    one `data_dir`. ValueError for a relative name with several directories (merge them first)."""
    path = Path(name)
    if path.is_absolute():
        return path
    dirs = _as_dirs(data_dir)
    if len(dirs) != 1:
        raise ValueError(f"{name!r} is relative but data_dir names {len(dirs)} directories: "
                         "use the manifest load_manifest(data_dirs) returns")
    return dirs[0] / path


def source_labels(manifest: dict, names: list[str]) -> tuple[list[tuple[int, int]], int]:
    """The label ranges `[start, stop)` and the training-image count of the named sources.

    Each source's classes take one contiguous block of the label space (`label_offset` ..
    `label_offset + train_classes`, `prepare`'s `plan_files`), so a subset of sources is a set of
    label ranges. Raises ValueError naming an unknown or validation-only source, or a selection
    without training images."""
    sources = manifest["sources"]
    trainable = sorted(n for n, s in sources.items() if not s.get("val_only") and s["train_classes"])
    bad = [n for n in names if n not in trainable]
    if bad:
        raise ValueError(f"train_sources {bad} are not sources with training classes in this data-prep output; "
                         f"choose from {trainable}")
    ranges = sorted((sources[n]["label_offset"], sources[n]["label_offset"] + sources[n]["train_classes"])
                    for n in dict.fromkeys(names))
    images = sum(sources[n]["train_images"] for n in dict.fromkeys(names))
    if not images:
        raise ValueError(f"train_sources {list(names)} hold no training images in this data-prep output")
    return ranges, images


def train_paths(data_dir: DataDirs, manifest: dict) -> list[Path]:
    """The manifest's training shards as paths (for `pipeline.train_dataset`, `class_counts`)."""
    return [data_path(data_dir, f) for f in manifest["train_files"]]
