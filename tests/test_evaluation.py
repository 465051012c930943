"""Per-query retrieval for the export notebook's pictures (guie_nb.evaluation): the embeddings the
score is computed from are returned, per-query P@5 agrees with the metric, and the images are read
back by id."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from guie_nb.evaluation import (QueryResult, ValidationEmbeddings, ValidationSet, embed_validation,
                                evaluate_embedder, pick_examples, query_results, read_images, score,
                                worst_queries)
from guie_nb.metrics import mean_precision_at_k, precision_at_k

IDS = {name: name * 16 for name in "abcdef"}  # 16-character index ids


def _val_set(tmp_path) -> ValidationSet:
    import tensorflow as tf

    def write(path, items):
        with tf.io.TFRecordWriter(str(path)) as w:
            for image_id, shade in items:
                buf = io.BytesIO()
                Image.new("RGB", (12, 8), (shade, shade, shade)).save(buf, format="PNG")
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1])),
                           "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"s"])),
                           "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

    write(tmp_path / "q.tfrec", [("q1", 10), ("q2", 200)])
    write(tmp_path / "i.tfrec", [(IDS[n], s) for n, s in zip("abcdef", (12, 14, 100, 198, 202, 250))])
    return ValidationSet([tmp_path / "q.tfrec"], [tmp_path / "i.tfrec"],
                         {"q1": [IDS["a"], IDS["b"]], "q2": [IDS["d"], IDS["c"]]}, {"q1": "dark", "q2": "light"})


def brightness(image: np.ndarray) -> np.ndarray:
    return np.array([image.mean() / 255.0, 0.0], np.float32)


def test_precision_at_k_is_the_metrics_per_query_term():
    rel = ["r1", "r2", "r3"]
    assert precision_at_k(["r1", "x", "r3", "r2"], rel) == pytest.approx(2 / 3)  # 3 slots: r2 comes 4th
    assert precision_at_k(["r1", "r1", "r2"], rel) == pytest.approx(2 / 3)  # a repeat scores once
    preds = {"q": ["x", "r1"], "p": ["r1"]}
    sol = {"q": rel, "p": ["r1"]}
    assert mean_precision_at_k(preds, sol) == pytest.approx((precision_at_k(preds["q"], rel) + 1.0) / 2)


def test_embed_validation_returns_what_the_score_is_computed_from(tmp_path):
    val = _val_set(tmp_path)
    emb = embed_validation(brightness, val)
    assert isinstance(emb, ValidationEmbeddings)
    assert emb.query_ids == ["q1", "q2"] and emb.index_ids == [IDS[n] for n in "abcdef"]
    assert emb.queries.shape == (2, 2) and emb.index.shape == (6, 2)
    assert score(val, *emb) == evaluate_embedder(brightness, val)


def test_query_results_mark_hits_and_agree_with_the_score(tmp_path):
    val = _val_set(tmp_path)
    emb = embed_validation(brightness, val)
    results = query_results(val, emb, k=3)
    q1, q2 = results
    assert q1.neighbours == [IDS["a"], IDS["b"], IDS["c"]] and q1.hits == [True, True, False]
    assert q2.neighbours == [IDS["d"], IDS["e"], IDS["f"]] and q2.hits == [True, False, False]
    assert (q1.precision, q2.precision, q1.source) == (1.0, 0.5, "dark")
    assert q1.distances == sorted(q1.distances)
    assert np.mean([r.precision for r in results]) == pytest.approx(score(val, *emb, k=3)["map5"])
    assert worst_queries(results, 1) == [q2]
    assert pick_examples(results, per_source=1) == results


def test_query_results_reject_a_query_outside_the_solution(tmp_path):
    val = _val_set(tmp_path)
    emb = embed_validation(brightness, val)
    with pytest.raises(ValueError, match="'zz' is not in the validation solution"):
        query_results(val, emb._replace(query_ids=["q1", "zz"]))


def test_pick_examples_takes_the_first_per_source_and_worst_breaks_ties_by_distance():
    def r(qid, source, precision, nearest):
        return QueryResult(qid, source, ["x"], [nearest], [precision > 0], precision)

    results = [r("a", "s", 0.0, 0.1), r("b", "s", 0.0, 0.9), r("c", "t", 1.0, 0.2), r("d", "s", 0.5, 0.1)]
    assert [x.query_id for x in pick_examples(results, per_source=2)] == ["a", "b", "c"]
    assert [x.query_id for x in worst_queries(results, 3)] == ["b", "a", "d"]


def test_read_images_decodes_by_id_and_names_missing_ids(tmp_path):
    val = _val_set(tmp_path)
    images = read_images(val.query_files + val.index_files, ["q2", IDS["f"]])
    assert set(images) == {"q2", IDS["f"]}
    assert images["q2"].shape == (8, 12, 3) and images["q2"].dtype == np.uint8 and images["q2"][0, 0, 0] == 200
    assert read_images(val.index_files, []) == {}
    with pytest.raises(KeyError, match="1 image ids are not in .*'nope'"):
        read_images(val.index_files, [IDS["a"], "nope"])
