"""The writing half of data-prep: shard tasks, run over all cores, resumable.

Each task is one output file (a training shard, or one part of the validation split) with its
exact list of images, fixed before any work starts; a worker process writes the whole file. A
finished task leaves a marker `.shards/<name>.json` holding a hash of everything its file depends
on (images, labels, image settings): a rerun skips a task whose marker and file match, and redoes
it otherwise. Files appear under their final names only when complete (write, fsync, rename).

The process that encodes images (each worker; the caller's process with one process) first raises
glibc's malloc thresholds (`raise_malloc_thresholds`): with glibc's start-up values every image's
buffers went back to the kernel after use and were page-faulted in again for the next image, about
a fifth of the CPU time per image in a new worker process (docs/data_prep.md, "Speed").
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from guie_nb.data.images import BadImage, process_bytes_sized, read_file
from guie_nb.data.tfrecord_format import AtomicWriter, RecordError, decode_example, encode_example, read_record
from guie_nb.data.source_images import SourceImage

KILL_ENV = "GUIE_DATA_PREP_KILL_AFTER_SHARDS"  # tests: SIGKILL the run after N finished tasks
MARKERS = ".shards"
PARTS = ".parts"
# mallopt(3) parameters (glibc's malloc.h) and the values set: the ceiling glibc's own dynamic
# thresholds reach (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice that for trimming)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ImageSettings:
    max_side: int
    quality: int


@dataclass
class Task:
    name: str  # train-XXXXX-of-XXXXX.tfrec, or val-XXXXX for a validation part
    kind: str  # "train" | "val"
    # train: [(image, global label)]; val: [(image, class key, queries_per_class)]
    items: list[tuple]
    settings: ImageSettings
    out_dir: str

    @property
    def hash(self) -> str:
        h = hashlib.sha256(json.dumps([self.name, self.kind, self.settings.max_side, self.settings.quality]).encode())
        for img, *rest in self.items:
            domain = [img.domain] if img.domain else []  # absent when unset: earlier markers stay valid
            h.update(json.dumps([str(img.path), img.offset, img.label, img.image_id, img.source, *rest,
                                 *domain]).encode())
        return h.hexdigest()

    @property
    def files(self) -> list[str]:
        if self.kind == "train":
            return [self.name]
        return [f"{PARTS}/{self.name}-queries.tfrec", f"{PARTS}/{self.name}-index.tfrec"]


def read_image_bytes(img: SourceImage) -> bytes:
    if img.offset < 0:
        return read_file(img.path)
    try:
        encoded = decode_example(read_record(img.path, img.offset)).get("image/encoded") or [b""]
    except (OSError, RecordError, ValueError) as e:
        raise BadImage(f"unreadable TFRecord record ({e})") from e
    return encoded[0]


def _example(encoded: tuple[bytes, tuple[int, int]], label: int, img: SourceImage) -> bytes:
    data, (height, width) = encoded
    # the source image's size before max_side (ModelConfig.size_features); readers default it to 0
    return encode_example({"image": data, "label": label, "source": img.source.encode(),
                           "image_id": img.uid.encode(), "original_height": height, "original_width": width})


def _encode(img: SourceImage, settings: ImageSettings, skipped: list[dict]) -> tuple[bytes, tuple[int, int]] | None:
    try:
        return process_bytes_sized(read_image_bytes(img), settings.max_side, settings.quality)
    except BadImage as e:
        where = f"{img.path}@{img.offset}" if img.offset >= 0 else str(img.path)
        skipped.append({"path": where, "reason": str(e)})
        return None


def run_task(task: Task) -> dict:
    """Write the task's file(s), then its marker; returns the marker."""
    out = Path(task.out_dir)
    skipped: list[dict] = []
    marker = {"name": task.name, "kind": task.kind, "hash": task.hash, "items": len(task.items)}
    writers = [AtomicWriter(out / f) for f in task.files]
    try:
        if task.kind == "train":
            counts: Counter = Counter()
            for img, label in task.items:
                data = _encode(img, task.settings, skipped)
                if data is not None:
                    writers[0].write(_example(data, label, img))
                    counts[label] += 1
            marker.update(records=sum(counts.values()), label_counts={str(k): v for k, v in sorted(counts.items())})
        else:
            marker.update(_write_val(task, writers, skipped))
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    marker["sizes"] = {f: (out / f).stat().st_size for f in task.files}
    marker["skipped"] = skipped
    _write_json(out / MARKERS / f"{task.name}.json", marker)
    return marker


def _write_val(task: Task, writers: list[AtomicWriter], skipped: list[dict]) -> dict:
    """Per class: the first `queries_per_class` decodable images are queries, the rest its index."""
    queries, index = writers
    solution, query_source, query_domain, by_source = [], {}, {}, Counter()
    by_class: dict[str, list] = {}
    for img, key, q in task.items:
        by_class.setdefault(key, []).append((img, q))
    for key, members in by_class.items():
        q = members[0][1]
        encoded = [(img, d) for img, _ in members if (d := _encode(img, task.settings, skipped)) is not None]
        if len(encoded) <= q:
            skipped += [{"path": str(i.path), "reason": "validation class too small after decoding"}
                        for i, _ in encoded]
            continue
        index_ids = [img.uid for img, _ in encoded[q:]]
        for img, d in encoded[:q]:
            queries.write(_example(d, -1, img))
            solution.append([img.uid, index_ids])
            query_source[img.uid] = img.source
            if img.domain:
                query_domain[img.uid] = img.domain
        for img, d in encoded[q:]:
            index.write(_example(d, -1, img))
        by_source[members[0][0].source] += len(encoded)
    return {"records": sum(by_source.values()), "solution": solution, "query_source": query_source,
            "query_domain": query_domain, "by_source": dict(by_source)}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def finished(task: Task) -> dict | None:
    """The task's marker when its files are complete and were made from the same inputs."""
    out = Path(task.out_dir)
    try:
        marker = json.loads((out / MARKERS / f"{task.name}.json").read_text())
    except (OSError, ValueError):
        return None
    if marker.get("hash") != task.hash:
        return None
    for f in task.files:
        if not (out / f).is_file() or (out / f).stat().st_size != marker.get("sizes", {}).get(f):
            return None
    return marker


def remove_leftovers(out: Path, tasks: list[Task]) -> list[str]:
    """Delete temporary files of interrupted runs, and shards/markers no task of this run owns."""
    keep = {f for t in tasks for f in t.files}
    markers = {f"{t.name}.json" for t in tasks}
    removed = []
    for folder in (out, out / MARKERS, out / PARTS):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            rel = p.relative_to(out).as_posix()
            stale = (".tmp-" in p.name
                     or (folder == out and p.name.startswith("train-") and p.name.endswith(".tfrec") and rel not in keep)
                     or (folder.name == MARKERS and p.name not in markers)
                     or (folder.name == PARTS and rel not in keep))
            if stale and p.is_file():
                p.unlink()
                removed.append(rel)
    return removed


def _die() -> None:
    """Simulate a machine dying: SIGKILL the workers and this process, no cleanup."""
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def raise_malloc_thresholds() -> bool:
    """Keep freed heap memory in this process for the next image (glibc only); True when set.

    A new process starts with glibc's malloc thresholds at 128 KiB: a block above M_MMAP_THRESHOLD
    is its own mmap, unmapped on free, and free heap above M_TRIM_THRESHOLD at the top is given back
    to the kernel. An image's buffers (the decoded image, resize and encode buffers: 1-3 MB for
    1024x768 sources) then cost fresh, zeroed pages every image: about 470 minor page faults and 1.2-
    1.6 ms of 7.2 ms CPU per image in a new process, none once the thresholds are up (measured with
    `getrusage`, docs/data_prep.md "Speed"). glibc raises both by itself after freeing a large block,
    which a long-lived process that has done so (e.g. one that generated the images) already has, so
    without this the speed of a run depended on the process's history. Sets M_MMAP_THRESHOLD to
    32 MiB and M_TRIM_THRESHOLD to 64 MiB (`mallopt(3)`), the ceiling of glibc's own adjustment;
    costs at most 64 MiB of held memory per process. Elsewhere (musl, macOS) a no-op returning False.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def run_tasks(tasks: list[Task], pool=lambda n_jobs: None, progress: bool = True) -> list[dict]:
    """Markers of all tasks, in task order; only unfinished tasks are run, on `pool(len(todo))`
    (a multiprocessing pool from `make_pool`, or None to run them here, after
    `raise_malloc_thresholds` as the pool's workers do). `progress`: report the images done
    (`guie_nb.data.progress.CountProgress`: a bar in a terminal, whole lines in a notebook or log)."""
    from guie_nb.data.progress import CountProgress

    markers = {t.name: m for t in tasks if (m := finished(t)) is not None}
    todo = [t for t in tasks if t.name not in markers]
    total = sum(len(t.items) for t in tasks)
    bar = CountProgress(total, "images", "img", initial=total - sum(len(t.items) for t in todo),
                        disable=not progress)
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    workers = pool(len(todo))
    if workers is None and todo:
        raise_malloc_thresholds()
    results = workers.imap_unordered(run_task, todo) if workers is not None else map(run_task, todo)
    for n, marker in enumerate(results, 1):
        markers[marker["name"]] = marker
        bar.update(marker["items"])
        if kill_after and n >= kill_after:
            _die()
    bar.close()
    return [markers[t.name] for t in tasks]


def make_pool(processes: int):
    """Spawned workers: safe whatever the parent has loaded (TensorFlow, JAX threads); each raises
    its malloc thresholds first (`raise_malloc_thresholds`)."""
    return multiprocessing.get_context("spawn").Pool(processes, initializer=raise_malloc_thresholds)
