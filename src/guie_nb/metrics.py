"""The competition metric (modified mean Precision@5), its solution-file reader, and exact kNN.

Semantics follow the host's `universal_embedding_challenge` metric: for a query with n relevant
index images only the first min(n, k) predictions count; a repeated index id takes its slot but
scores once; the query scores hits / min(n, k); the mean runs over every query of the solution,
so a query without predictions scores 0.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

INDEX_ID_LENGTH = 16
USAGES = ("Public", "Private")


def mean_precision_at_k(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    k: int = 5,
) -> float:
    """Modified mP@k of `predictions` (query id -> ranked index ids) against `solution`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not solution:
        raise ValueError("the solution has no queries")
    for query, relevant in solution.items():
        if not relevant:
            raise ValueError(f"query {query!r} has no relevant index images in the solution")
    unknown = [q for q in predictions if q not in solution]
    if unknown:
        raise ValueError(f"{len(unknown)} predicted queries are not in the solution, e.g. {unknown[0]!r}")

    total = sum(precision_at_k(predicted, solution[query], k) for query, predicted in predictions.items())
    return total / len(solution)


def precision_at_k(predicted: Sequence[str], relevant: Sequence[str], k: int = 5) -> float:
    """One query's modified P@k: hits among the first min(n relevant, k) predictions, over that
    number; a repeated index id scores once (the host's metric, see the module docstring)."""
    relevant_set = set(relevant)
    slots = min(len(relevant_set), k)
    if slots == 0:
        raise ValueError("a query needs at least one relevant index image")
    seen: set[str] = set()
    hits = 0
    for index_id in list(predicted)[:slots]:
        if index_id in seen:
            continue
        seen.add(index_id)
        hits += index_id in relevant_set
    return hits / slots


def load_solution(path: str | Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Read a Kaggle retrieval solution CSV into `(public, private)` dicts.

    Format: a header line, then `<query id>,<space-separated index ids>,<Public|Private>`.
    Every index id has 16 characters and no whitespace.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"solution file not found: {path}")
    public: dict[str, list[str]] = {}
    private: dict[str, list[str]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        if next(reader, None) is None:
            raise ValueError(f"{path}: empty file (expected a header line)")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 fields, got {len(row)}: {row}")
            query, ids_field, usage = row
            ids = ids_field.split(" ")
            for index_id in ids:
                if index_id.strip() != index_id or any(c.isspace() for c in index_id):
                    raise ValueError(f"{path}:{line_no}: index id {index_id!r} contains whitespace")
                if len(index_id) != INDEX_ID_LENGTH:
                    raise ValueError(
                        f"{path}:{line_no}: index id {index_id!r} is not {INDEX_ID_LENGTH} characters"
                    )
            if usage == "Public":
                public[query] = ids
            elif usage == "Private":
                private[query] = ids
            else:
                raise ValueError(f"{path}:{line_no}: usage must be Public or Private, got {usage!r}")
    return public, private


def write_solution(path: str | Path, solution: Mapping[str, Sequence[str]], usage: Mapping[str, str] | None = None) -> None:
    """Write a solution CSV that `load_solution` (and the host's reader) accepts."""
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "images", "Usage"])
        for query, ids in solution.items():
            writer.writerow([query, " ".join(ids), (usage or {}).get(query, "Private")])


def knn(
    queries: np.ndarray, index: np.ndarray, k: int = 5, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours: `(indices, distances)`, each `[n_queries, k]`.

    Ties are broken by index position (stable), so results are deterministic.
    """
    queries = np.asarray(queries, dtype=np.float64)
    index = np.asarray(index, dtype=np.float64)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(f"need 2-D arrays of the same width, got {queries.shape} and {index.shape}")
    if len(index) == 0:
        raise ValueError("the index is empty")
    k = min(k, len(index))
    index_sq = np.einsum("ij,ij->i", index, index)
    all_idx, all_dist = [], []
    for start in range(0, len(queries), batch_size):
        q = queries[start : start + batch_size]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * q @ index.T + index_sq[None, :]
        np.maximum(d2, 0.0, out=d2)
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        all_idx.append(order)
        all_dist.append(np.sqrt(np.take_along_axis(d2, order, axis=1)))
    if not all_idx:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
    return np.concatenate(all_idx), np.concatenate(all_dist)


def retrieve(
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    index_ids: Sequence[str],
    index_embeddings: np.ndarray,
    k: int = 5,
) -> dict[str, list[str]]:
    """kNN predictions as the scorer makes them: query id -> the k nearest index ids."""
    if len(query_ids) != len(query_embeddings) or len(index_ids) != len(index_embeddings):
        raise ValueError("ids and embeddings differ in length")
    neighbours, _ = knn(query_embeddings, index_embeddings, k=k)
    return {q: [index_ids[j] for j in row] for q, row in zip(query_ids, neighbours)}
