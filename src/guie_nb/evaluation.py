"""Validation retrieval: embed the held-out queries and index, kNN, modified mP@5 per domain."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from guie_nb.data.prepare import DataDirs, data_path
from guie_nb.metrics import knn, load_solution, mean_precision_at_k, precision_at_k, retrieve


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
        images = {k: v.numpy() for k, v in images.items()} if isinstance(images, dict) else images.numpy()
        out.append(np.asarray(embed_batch(images)))
        ids += [i.decode() for i in batch_ids.numpy()]
    return ids, np.concatenate(out) if out else np.zeros((0, 0))


def evaluate_keras(embedding_model, val: ValidationSet, size: int, resize_mode: str, batch_size: int = 64) -> dict:
    """Score the Keras model on `val`; a model with a second input (`ModelConfig.size_features`) gets
    each image's original size from the shards."""
    from guie_nb.data.pipeline import eval_dataset

    def embed(x):
        return embedding_model.predict_on_batch(x)

    sized = len(embedding_model.inputs) > 1
    q_ids, q = embed_with(embed, eval_dataset(val.query_files, size, resize_mode, batch_size, sized))
    i_ids, i = embed_with(embed, eval_dataset(val.index_files, size, resize_mode, batch_size, sized))
    return score(val, q_ids, q, i_ids, i)


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """Decode as the scorer does: PIL, `.convert("RGB")`, uint8 `[H, W, 3]` at native size."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


class ValidationEmbeddings(NamedTuple):
    """Ids and embeddings of the held-out queries and index: `score(val, *embeddings)` scores them."""

    query_ids: list[str]
    queries: np.ndarray  # [n_queries, d]
    index_ids: list[str]
    index: np.ndarray  # [n_index, d]


def embed_validation(embed_one: Callable[[np.ndarray], np.ndarray], val: ValidationSet) -> ValidationEmbeddings:
    """Embed the queries and the index exactly as the scorer runs a submission: one image at a time,
    decoded with `decode_rgb` at native size."""
    from guie_nb.data.shard_reader import read_all

    def embed(files):
        records = read_all(files)
        return [r["image_id"] for r in records], np.stack([embed_one(decode_rgb(r["image"])) for r in records])

    return ValidationEmbeddings(*embed(val.query_files), *embed(val.index_files))


def evaluate_embedder(embed_one: Callable[[np.ndarray], np.ndarray], val: ValidationSet) -> dict:
    """Score a per-image embedder (an exported model) exactly as the scorer runs it: one image at a time."""
    return score(val, *embed_validation(embed_one, val))


@dataclass(frozen=True)
class QueryResult:
    """One held-out query's retrieval: its `k` nearest index ids (nearest first), their Euclidean
    distances, which of them are relevant, and the query's modified P@k (`metrics.precision_at_k`)."""

    query_id: str
    source: str
    neighbours: list[str]
    distances: list[float]
    hits: list[bool]
    precision: float


def query_results(val: ValidationSet, embeddings: ValidationEmbeddings, k: int = 5) -> list[QueryResult]:
    """Per-query retrieval, in query order, with the same kNN and metric as `score`."""
    q_ids, q, i_ids, i = embeddings
    neighbours, distances = knn(q, i, k=k)
    out = []
    for qid, row, dist in zip(q_ids, neighbours, distances):
        relevant = val.solution.get(qid)
        if relevant is None:
            raise ValueError(f"query {qid!r} is not in the validation solution")
        ids, relevant_set = [i_ids[j] for j in row], set(relevant)
        out.append(QueryResult(qid, val.query_source.get(qid, "?"), ids, [float(d) for d in dist],
                               [x in relevant_set for x in ids], precision_at_k(ids, relevant, k)))
    return out


def pick_examples(results: list[QueryResult], per_source: int = 2) -> list[QueryResult]:
    """The first `per_source` queries of each source domain (query order: reproducible)."""
    taken: dict[str, int] = {}
    picked = []
    for r in results:
        if taken.get(r.source, 0) < per_source:
            taken[r.source] = taken.get(r.source, 0) + 1
            picked.append(r)
    return picked


def worst_queries(results: list[QueryResult], n: int = 6) -> list[QueryResult]:
    """The `n` lowest-scoring queries (ties: the farther nearest neighbour first, then query id)."""
    return sorted(results, key=lambda r: (r.precision, -r.distances[0], r.query_id))[:n]


def examples(files: Iterable[str | Path]) -> Iterator[dict[str, list]]:
    """The records of TFRecord `files` in order, as `{feature: [values]}` (`recordio.decode_example`),
    read without TensorFlow; `guie_nb.data.tfrecord_format.RecordError` at a corrupt record."""
    from guie_nb.data.tfrecord_format import decode_example, iter_records

    for path in files:
        for _, record in iter_records(path):
            yield decode_example(record)


def read_images(files: Iterable[str | Path], ids: Iterable[str]) -> dict[str, np.ndarray]:
    """The images `ids` from TFRecord `files`, decoded as the scorer does (`decode_rgb`).
    KeyError naming the ids that are in none of the files."""
    files, wanted, found = [str(f) for f in files], set(ids), {}
    if not wanted:
        return found
    for ex in examples(files):
        image_id = ex["image_id"][0].decode()
        if image_id in wanted:
            found[image_id] = decode_rgb(ex["image"][0])
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"{len(missing)} image ids are not in {files}, e.g. {sorted(missing)[0]!r}")
    return found
