"""Backbone features computed once and stored on disk: what `guie_nb.training.cached` trains on.

With a frozen backbone the features of an image never change, so one forward pass per image is
enough (5th place trained its BN + Linear head on precomputed ViT-H-14 embeddings). Layout under
`<out_dir>/feature_cache/`:

    manifest.json           what the features depend on (`spec`): backbone architecture, input size,
                            resize mode, precision, a SHA-256 of the backbone's weights, the data
                            shards (names and sizes); plus what the cache holds
    train-00000.npz, ...    one per data-prep training shard, in the manifest's order:
                            `features` float16 `[n, feature_dim]`, `labels` int32 `[n]`,
                            `original_sizes` float32 `[n, 2]` (height, width of the source image)
    val-queries.npz,        the validation split: `features`, `image_ids`, `original_sizes`
    val-index.npz

Images are preprocessed as for evaluation and export (`resize_images` with the model's resize
mode, no augmentation): the features the exported model's backbone computes at scoring time.
`original_sizes` are the source images' sides before data-prep's resize
(`shard_reader.original_size`: the stored image's for older records without them), what a
`ModelConfig.size_features` model takes as its second input.

Every file is written under a temporary name and renamed, so a file that exists is complete. A
rerun keeps the files that exist and embeds the rest: an interrupted pass loses at most the shard
it was writing. Several processes split the files round-robin, each embedding its share on its
own devices (`build_feature_cache(share=..., barrier=...)`). A cache whose `spec` differs from
the current run's (another backbone, other weights, other data) raises `StaleCacheError` naming
what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

CACHE_DIR = "feature_cache"
MANIFEST = "manifest.json"
FORMAT = 2  # 2: original_sizes (source image sides) instead of the stored images' sizes
VAL_ROLES = ("queries", "index")


class StaleCacheError(ValueError):
    """The cache on disk was made with another backbone, other weights or other data."""


class FeatureCache(NamedTuple):
    train_features: np.ndarray  # float16 [n_train, feature_dim]
    train_labels: np.ndarray  # int32 [n_train]
    train_sizes: np.ndarray  # float32 [n_train, 2]: source image height, width
    query_ids: list[str]
    queries: np.ndarray  # float16 [n_queries, feature_dim]
    index_ids: list[str]
    index: np.ndarray  # float16 [n_index, feature_dim]
    query_sizes: np.ndarray  # float32 [n_queries, 2]
    index_sizes: np.ndarray  # float32 [n_index, 2]

    @property
    def images(self) -> int:
        """Images in the cache: each went through the backbone exactly once."""
        return len(self.train_labels) + len(self.query_ids) + len(self.index_ids)


def cache_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CACHE_DIR


def backbone_fingerprint(embedding_model) -> str:
    """SHA-256 over everything before the neck: the input normalisation and the `visual` ViT's
    weights (path, shape, dtype, bytes), in order. Reads every backbone weight (~2.5 GB for a
    float32 ViT-H-14: seconds)."""
    import keras

    h = hashlib.sha256()
    for layer_name in ("clip_normalize", "visual"):
        for w in embedding_model.get_layer(layer_name).weights:
            a = np.ascontiguousarray(keras.ops.convert_to_numpy(w.value))
            h.update(f"{w.path}|{a.shape}|{a.dtype}\n".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def cache_spec(model_cfg, precision: str, weights_sha256: str, train_files: Sequence[Path],
               val_files: Sequence[Path]) -> dict:
    """What the cached features are a function of. Data files by name and size in bytes (hashing
    tens of GB of shards would cost more than it protects: data-prep writes them deterministically)."""

    def files(paths):
        return [[Path(p).name, Path(p).stat().st_size] for p in paths]

    return {"format": FORMAT, "backbone": model_cfg.vit.to_dict(), "input_size": model_cfg.input_size,
            "resize_mode": model_cfg.resize_mode, "precision": precision, "weights_sha256": weights_sha256,
            "train_files": files(train_files), "val_files": files(val_files)}


def _write_npz(path: Path, **arrays) -> None:
    """`path` complete or absent: written to a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def check_manifest(directory: Path, spec: dict) -> None:
    """Raise `StaleCacheError` when `directory` holds a cache made for another `spec`."""
    path = directory / MANIFEST
    if not path.is_file():
        return
    old = json.loads(path.read_text()).get("spec", {})
    if old != spec:
        differ = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
        raise StaleCacheError(
            f"{directory} holds backbone features made with another {', '.join(differ)} than this run's; "
            f"they cannot be reused. Delete {directory} to embed again, or use another out_dir.")


def is_complete(directory: str | Path, spec: dict) -> bool:
    """Whether `directory` holds a complete cache made for `spec` (no error either way)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text())
    return manifest.get("spec") == spec and bool(manifest.get("complete"))


def _records(files: Sequence[Path], size: int, resize_mode: str, batch_size: int):
    """tf.data over TFRecord `files` in order: batches of (pixels float32 `[b, size, size, 3]`,
    label, image_id, `[h, w]` of the source image), preprocessed as `pipeline.eval_dataset`."""
    import tensorflow as tf

    from guie_nb.data.pipeline import AUTOTUNE
    from guie_nb.data.shard_reader import original_size, parse
    from guie_nb.model.preprocessing import resize_images

    def prepare(raw):
        ex = parse(raw)
        image = tf.io.decode_jpeg(ex["image"], channels=3)
        return (resize_images(image, size, resize_mode), tf.cast(ex["label"], tf.int32), ex["image_id"],
                original_size(ex, image))

    ds = tf.data.TFRecordDataset([str(f) for f in files]).map(prepare, num_parallel_calls=AUTOTUNE,
                                                                 deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def embed_files(embed_batch: Callable[[np.ndarray], np.ndarray], files: Sequence[Path], size: int,
                resize_mode: str, batch_size: int) -> dict[str, np.ndarray]:
    """Features (float16), labels, image ids and source sizes of every record of `files`, in order.
    Every batch is padded to `batch_size`, so the backbone compiles once for all shards."""
    feats, labels, ids, sizes = [], [], [], []
    for pixels, label, image_id, hw in _records(files, size, resize_mode, batch_size).as_numpy_iterator():
        n = len(label)
        if n < batch_size:
            pixels = np.concatenate([pixels, np.zeros((batch_size - n, *pixels.shape[1:]), pixels.dtype)])
        out = np.asarray(embed_batch(pixels), dtype=np.float32)[:n]
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"the backbone gave non-finite features for a batch of {files}")
        feats.append(out.astype(np.float16))
        labels.append(label)
        ids += [i.decode() for i in image_id]
        sizes.append(hw)
    if not labels:
        raise ValueError(f"no records in {list(map(str, files))}")
    return {"features": np.concatenate(feats), "labels": np.concatenate(labels).astype(np.int32),
            "image_ids": np.array(ids), "original_sizes": np.concatenate(sizes).astype(np.float32)}


def train_shard_name(i: int) -> str:
    return f"train-{i:05d}.npz"


def build_feature_cache(directory: str | Path, spec: dict, embed_batch: Callable[[np.ndarray], np.ndarray],
                        train_files: Sequence[Path], val_files: dict[str, Sequence[Path]], size: int, resize_mode: str,
                        batch_size: int, log: Callable[[str], None] = print, share: tuple[int, int] = (0, 1),
                        barrier: Callable[[str], None] | None = None) -> int:
    """Embed every training shard and the validation split that `directory` does not hold yet.

    `embed_batch`: float32 pixels `[batch_size, size, size, 3]` (0..255) -> features `[batch_size, D]`
    (the frozen backbone). `val_files`: `{"queries": [paths], "index": [paths]}`. Returns how many images
    went through the backbone in this call (0 when the cache was complete). Raises
    `StaleCacheError` when `directory` holds a cache for another `spec`.

    Several processes (`share` = (this process's index, process count), `barrier(name)` a
    collective every process calls, e.g. `distributed.barrier`): the output files (each training
    shard, then the two validation files) are dealt round-robin, every `count`-th to each process,
    which embeds them on its own devices; process 0 writes the manifest, marked complete once
    every process has passed the barrier. Every process returns its own count.
    """
    index, count = share
    if not 0 <= index < count:
        raise ValueError(f"share={share}: the process index must be in 0..{count - 1}")
    if count > 1 and barrier is None:
        raise ValueError(f"{count} processes need a barrier (guie_nb.training.distributed.barrier)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    check_manifest(directory, spec)
    if index == 0:
        _write_json(directory / MANIFEST, {"spec": spec, "complete": False})
    jobs = [(directory / train_shard_name(i), [f]) for i, f in enumerate(train_files)]
    jobs += [(directory / f"val-{role}.npz", list(val_files[role])) for role in VAL_ROLES]
    embedded, reused = 0, 0
    for path, files in jobs[index::count]:
        if path.is_file():
            reused += 1
            continue
        arrays = embed_files(embed_batch, files, size, resize_mode, batch_size)
        if path.name.startswith("val-"):
            arrays.pop("labels")  # validation images carry label -1; the solution CSV says what matches
        _write_npz(path, **arrays)
        embedded += len(arrays["image_ids"])
    if barrier is not None:
        barrier("feature_cache_embedded")  # every process's files are in place
    if index == 0:
        missing = [p.name for p, _ in jobs if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} lacks {missing} after every process embedded its share")
        _write_json(directory / MANIFEST, {"spec": spec, "complete": True, "train_shards": len(train_files)})
    if barrier is not None:
        barrier("feature_cache_complete")  # the manifest says complete before anyone loads
    who = f" (process {index} of {count})" if count > 1 else ""
    log(f"feature cache {directory}{who}: {embedded} images embedded, {reused} of {len(jobs[index::count])} "
        "files reused")
    return embedded


def load_feature_cache(directory: str | Path, spec: dict) -> FeatureCache:
    """The complete cache in `directory`, checked against `spec` (`StaleCacheError`), as arrays in
    host memory. FileNotFoundError when it is incomplete."""
    directory = Path(directory)
    check_manifest(directory, spec)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file() or not json.loads(manifest_path.read_text()).get("complete"):
        raise FileNotFoundError(f"{directory} holds no complete feature cache: build_feature_cache first")
    n = json.loads(manifest_path.read_text())["train_shards"]
    shards = [np.load(directory / train_shard_name(i)) for i in range(n)]
    val = {role: np.load(directory / f"val-{role}.npz") for role in VAL_ROLES}
    return FeatureCache(
        np.concatenate([s["features"] for s in shards]), np.concatenate([s["labels"] for s in shards]),
        np.concatenate([s["original_sizes"] for s in shards]),
        [str(i) for i in val["queries"]["image_ids"]], val["queries"]["features"],
        [str(i) for i in val["index"]["image_ids"]], val["index"]["features"],
        val["queries"]["original_sizes"], val["index"]["original_sizes"])
