"""Margin heads: the logit at the label, sub-centres, and the margin schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from guie_nb.model.margin_heads import MarginHead, margins_for_epoch


def _head(kind, margin=0.3, subcenters=1, classes=3, dim=4, scale=10.0):
    head = MarginHead(classes, kind, scale, margin, subcenters)
    head.build([(None, dim), (None,)])
    rng = np.random.default_rng(0)
    head.centers.assign(rng.normal(size=(dim, classes * subcenters)).astype("float32"))
    return head


def _cos(e, c):
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    c = c / np.linalg.norm(c, axis=0, keepdims=True)
    return e @ c


@pytest.mark.parametrize("kind", ["arcface", "cosface", "softmax"])
def test_logit_at_label_has_the_margin(kind):
    head = _head(kind)
    emb = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    labels = np.array([0, 1, 2, 1, 0])
    logits = ops.convert_to_numpy(head([emb, labels]))
    cos = _cos(emb, ops.convert_to_numpy(head.centers))
    theta = np.arccos(cos[np.arange(5), labels])
    want = {"arcface": np.where(theta + 0.3 < math.pi, np.cos(theta + 0.3), np.cos(theta) - math.sin(math.pi - 0.3) * 0.3),
            "cosface": np.cos(theta) - 0.3, "softmax": np.cos(theta)}[kind]
    np.testing.assert_allclose(logits[np.arange(5), labels], 10.0 * want, atol=1e-4)
    other = np.ones_like(cos, bool)
    other[np.arange(5), labels] = False
    np.testing.assert_allclose(logits[other], 10.0 * cos[other], atol=1e-4)


def test_subcenters_take_the_closest_centre():
    head = _head("softmax", subcenters=3, classes=2)
    emb = np.random.default_rng(2).normal(size=(4, 4)).astype("float32")
    logits = ops.convert_to_numpy(head([emb, np.zeros(4, "int32")]))
    cos = _cos(emb, ops.convert_to_numpy(head.centers)).reshape(4, 2, 3).max(-1)
    np.testing.assert_allclose(logits, 10.0 * cos, atol=1e-4)


def test_per_class_margin_is_used_at_the_label():
    head = _head("cosface", margin=0.0)
    head.margin.assign(np.array([0.1, 0.2, 0.4], "float32"))
    emb = np.random.default_rng(3).normal(size=(3, 4)).astype("float32")
    labels = np.array([0, 1, 2])
    logits = ops.convert_to_numpy(head([emb, labels]))
    cos = _cos(emb, ops.convert_to_numpy(head.centers))[np.arange(3), labels]
    np.testing.assert_allclose(logits[np.arange(3), labels], 10.0 * (cos - [0.1, 0.2, 0.4]), atol=1e-4)


def test_margin_schedules():
    np.testing.assert_allclose(margins_for_epoch("fixed", 5, 3, 0.3), [0.3] * 3)
    grow = [margins_for_epoch("linear", e, 2, 0.1, margin_max=0.35, growth=0.1)[0] for e in range(5)]
    np.testing.assert_allclose(grow, [0.1, 0.2, 0.3, 0.35, 0.35], atol=1e-6)
    dyn = margins_for_epoch("dynamic", 0, 3, 0.2, margin_max=0.5, class_counts=np.array([100, 10, 1]))
    assert dyn[0] == pytest.approx(0.2) and dyn[2] == pytest.approx(0.5) and 0.2 < dyn[1] < 0.5
    with pytest.raises(ValueError, match="image count of every class"):
        margins_for_epoch("dynamic", 0, 3, 0.2)
    with pytest.raises(ValueError, match="unknown margin schedule"):
        margins_for_epoch("cosine", 0, 3, 0.2)


def test_bad_head_arguments_are_named():
    with pytest.raises(ValueError, match="unknown margin head"):
        MarginHead(3, "sphereface")
    with pytest.raises(ValueError, match="at least 2 classes"):
        MarginHead(1)
