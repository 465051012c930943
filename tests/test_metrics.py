"""The competition metric, the solution-file reader and the kNN, against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from guie_nb.metrics import knn, load_solution, mean_precision_at_k, retrieve, write_solution


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:0{16 - len(prefix)}d}" for i in range(n)]


def test_official_fixture_value():
    # Five queries scoring 0, 1/3, 4/5, 1 and (no prediction) 0: mean 0.426667.
    r1, r2, r3, r4, r5 = ids("a", 2), ids("b", 3), ids("c", 7), ids("d", 1), ids("e", 2)
    other = ids("z", 10)
    solution = {"q1": r1, "q2": r2, "q3": r3, "q4": r4, "q5": r5}
    predictions = {
        "q1": other[:5],                                    # no hit
        "q2": [r2[0], other[0], other[1], r2[1], r2[2]],    # 3 slots, 1 hit in them -> 1/3
        "q3": [r3[0], r3[1], other[0], r3[2], r3[3], r3[4]],  # 5 slots, 4 hits -> 4/5
        "q4": [r4[0]] + other[:4],                          # 1 slot, hit -> 1
    }
    assert mean_precision_at_k(predictions, solution) == pytest.approx(0.426667, abs=1e-6)


def test_repeated_prediction_takes_a_slot_but_scores_once():
    rel = ids("a", 5)
    solution = {"q": rel}
    assert mean_precision_at_k({"q": [rel[0]] * 5}, solution) == pytest.approx(1 / 5)
    assert mean_precision_at_k({"q": [rel[0], rel[0], rel[1], rel[2], rel[3]]}, solution) == pytest.approx(4 / 5)
    assert mean_precision_at_k({"q": rel}, solution) == 1.0


def test_fewer_relevant_than_k_counts_only_first_slots():
    rel = ids("a", 2)
    other = ids("z", 3)
    # relevant images beyond position min(n, k) = 2 do not count
    assert mean_precision_at_k({"q": other[:2] + rel}, {"q": rel}) == 0.0
    assert mean_precision_at_k({"q": [rel[1], other[0]]}, {"q": rel}) == pytest.approx(0.5)
    assert mean_precision_at_k({"q": rel[:1]}, {"q": rel}, k=1) == 1.0


def test_metric_errors():
    rel = ids("a", 2)
    with pytest.raises(ValueError, match="no relevant"):
        mean_precision_at_k({}, {"q": []})
    with pytest.raises(ValueError, match="not in the solution"):
        mean_precision_at_k({"nope": rel}, {"q": rel})
    with pytest.raises(ValueError, match="no queries"):
        mean_precision_at_k({}, {})
    with pytest.raises(ValueError, match="k must be"):
        mean_precision_at_k({}, {"q": rel}, k=0)


def test_solution_round_trip(tmp_path):
    path = tmp_path / "solution.csv"
    sol = {"q1": ids("a", 3), "q2": ids("b", 1)}
    write_solution(path, sol, usage={"q1": "Public"})
    public, private = load_solution(path)
    assert public == {"q1": sol["q1"]}
    assert private == {"q2": sol["q2"]}


@pytest.mark.parametrize(
    "body, message",
    [
        ("q1,{a},Public,extra\n", "expected 3 fields"),
        ("q1,{a}\n", "expected 3 fields"),
        ("q1,{a},Secret\n", "usage must be Public or Private"),
        ("q1,{a} short,Public\n", "is not 16 characters"),
        ("q1,{a}  {a},Public\n", "is not 16 characters"),
        ("q1,{a}\t,Public\n", "whitespace"),
    ],
)
def test_solution_reader_errors(tmp_path, body, message):
    path = tmp_path / "solution.csv"
    path.write_text("id,images,Usage\nq0,{a},Private\n".format(a=ids("a", 1)[0]) + body.format(a=ids("a", 1)[0]))
    with pytest.raises(ValueError, match=message) as err:
        load_solution(path)
    assert "solution.csv:3" in str(err.value)  # names the file and line


def test_solution_reader_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_solution(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty file"):
        load_solution(tmp_path / "empty.csv")


def test_knn_exact_against_brute_force():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(37, 8)), rng.normal(size=(101, 8))
    idx, dist = knn(q, x, k=5, batch_size=10)  # several batches
    brute = np.linalg.norm(q[:, None, :] - x[None, :, :], axis=-1)
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :5], atol=1e-9)


def test_knn_ties_are_stable_and_k_is_capped():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    idx, dist = knn(np.array([[1.0, 0.0]]), x, k=10)
    assert idx.tolist() == [[0, 2, 1, 3]]
    np.testing.assert_allclose(dist[0], [0, 0, np.sqrt(2), 2])


def test_knn_errors():
    with pytest.raises(ValueError, match="same width"):
        knn(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="empty"):
        knn(np.zeros((2, 3)), np.zeros((0, 3)))


def test_retrieve_scores_perfect_embeddings():
    qids, xids = ids("q", 4), ids("x", 8)
    centers = np.eye(4)
    index = np.repeat(centers, 2, axis=0) + 0.01 * np.arange(8)[:, None]
    pred = retrieve(qids, centers, xids, index, k=5)
    solution = {qids[i]: xids[2 * i: 2 * i + 2] for i in range(4)}
    assert mean_precision_at_k(pred, solution) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        retrieve(qids[:3], centers, xids, index)
