"""Validation retrieval: embed the held-out queries and index, kNN, modified mP@5 per domain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guie_nb.data.prepare import DataDirs, data_path
from guie_nb.metrics import load_solution, mean_precision_at_k, retrieve


@dataclass
class ValidationSet:
    query_files: list[Path]
    index_files: list[Path]
    solution: dict[str, list[str]]  # public and private together
    query_source: dict[str, str]
    # finer domains within a source (GPR1200's six); queries not in it are scored by source only
    query_domain: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, data_dir: DataDirs, manifest: dict) -> "ValidationSet":
        """The split `manifest` (from `load_manifest(data_dir)`) describes; `data_dir` is the one
        data-prep directory, or the list of part directories (whose merged manifest holds absolute
        paths). ValueError when there is no validation split, or for a part other than part 0 alone."""
        val = manifest.get("val") or {}
        if "in_part" in val:
            raise ValueError(f"{data_dir}: the validation split of this split data-prep is in part {val['in_part']}: "
                             "load all parts together, load_manifest([part_dir_0, part_dir_1, ...])")
        if not val.get("solution"):
            raise ValueError(f"{data_dir}: data-prep wrote no validation split (set val_classes in sources)")
        public, private = load_solution(data_path(data_dir, val["solution"]))
        return cls([data_path(data_dir, val["queries"])], [data_path(data_dir, val["index"])],
                   {**public, **private}, val["query_source"], val.get("query_domain", {}))


def score(val: ValidationSet, query_ids, query_emb, index_ids, index_emb, k: int = 5) -> dict[str, float]:
    """mP@k overall, per source and per finer domain (`map5_<source>`, `map5_<domain>`): each
    domain's queries against the whole index (every source's index images, training-source and
    validation-only alike), as the competition scores its 11 domains against one index."""
    predictions = retrieve(query_ids, query_emb, index_ids, index_emb, k=k)
    result = {"map5": mean_precision_at_k(predictions, val.solution, k)}
    for groups in (val.query_source, val.query_domain):
        for name in sorted(set(groups.values())):
            sol = {q: r for q, r in val.solution.items() if groups.get(q) == name}
            result[f"map5_{name}"] = mean_precision_at_k({q: predictions[q] for q in sol if q in predictions}, sol, k)
    return result


def embed_with(embed_batch: Callable[[np.ndarray], np.ndarray], dataset) -> tuple[list[str], np.ndarray]:
    """Run `embed_batch` over an `eval_dataset`, returning ids and stacked embeddings."""
    ids, out = [], []
    for images, batch_ids in dataset:
        out.append(np.asarray(embed_batch(images.numpy())))
        ids += [i.decode() for i in batch_ids.numpy()]
    return ids, np.concatenate(out) if out else np.zeros((0, 0))


def evaluate_keras(embedding_model, val: ValidationSet, size: int, resize_mode: str, batch_size: int = 64) -> dict:
    from guie_nb.data.pipeline import eval_dataset

    def embed(x):
        return embedding_model.predict_on_batch(x)

    q_ids, q = embed_with(embed, eval_dataset(val.query_files, size, resize_mode, batch_size))
    i_ids, i = embed_with(embed, eval_dataset(val.index_files, size, resize_mode, batch_size))
    return score(val, q_ids, q, i_ids, i)


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """Decode as the scorer does: PIL, `.convert("RGB")`, uint8 `[H, W, 3]` at native size."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def evaluate_embedder(embed_one: Callable[[np.ndarray], np.ndarray], val: ValidationSet) -> dict:
    """Score a per-image embedder (an exported model) exactly as the scorer runs it: one image at a time."""
    from guie_nb.data.shard_reader import read_all

    def embed(files):
        records = read_all(files)
        return [r["image_id"] for r in records], np.stack([embed_one(decode_rgb(r["image"])) for r in records])

    q_ids, q = embed(val.query_files)
    i_ids, i = embed(val.index_files)
    return score(val, q_ids, q, i_ids, i)
