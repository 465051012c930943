"""Margin softmax heads over L2-normalised embeddings: ArcFace, CosFace and plain normalised
softmax, each optionally with k sub-centres per class (sub-center ArcFace, 3rd/4th place).

The margin is a per-class, non-trainable vector: a schedule (fixed, growing per epoch, or
per-class dynamic from class sizes) writes it between epochs without recompiling the step.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

HEAD_TYPES = ("arcface", "cosface", "softmax")
MARGIN_SCHEDULES = ("fixed", "linear", "dynamic")


@keras.saving.register_keras_serializable(package="guie_nb")
class MarginHead(layers.Layer):
    """`[embedding, label] -> logits`: s * cos(theta + m) (ArcFace), s * (cos - m) (CosFace) or
    s * cos (softmax) at the label, s * cos elsewhere; cos is the max over the class's sub-centres."""

    def __init__(self, num_classes: int, kind: str = "arcface", scale: float = 30.0,
                 margin: float = 0.3, subcenters: int = 1, **kwargs):
        super().__init__(**kwargs)
        if kind not in HEAD_TYPES:
            raise ValueError(f"unknown margin head {kind!r}; choose one of {HEAD_TYPES}")
        if num_classes < 2:
            raise ValueError(f"a margin head needs at least 2 classes, got {num_classes}")
        if subcenters < 1:
            raise ValueError(f"subcenters must be >= 1, got {subcenters}")
        self.num_classes, self.kind, self.scale = num_classes, kind, scale
        self.initial_margin, self.subcenters = margin, subcenters

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.centers = self.add_weight(
            shape=(dim, self.num_classes * self.subcenters), initializer="glorot_uniform", name="centers"
        )
        self.margin = self.add_weight(
            shape=(self.num_classes,), initializer=keras.initializers.Constant(self.initial_margin),
            trainable=False, name="margin",
        )

    def cosine(self, embeddings):
        e = ops.normalize(ops.cast(embeddings, "float32"), axis=-1)
        c = ops.normalize(ops.cast(self.centers, "float32"), axis=0)
        cos = ops.matmul(e, c)
        if self.subcenters > 1:  # centres are laid out class-major: [c0k0, c0k1, ..., c1k0, ...]
            cos = ops.max(ops.reshape(cos, (-1, self.num_classes, self.subcenters)), axis=-1)
        return cos

    def call(self, inputs):
        embeddings, labels = inputs
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        cos = ops.clip(self.cosine(embeddings), -1.0 + 1e-7, 1.0 - 1e-7)
        m = ops.expand_dims(ops.take(ops.cast(self.margin, "float32"), labels), -1)  # [B, 1]
        if self.kind == "softmax":
            target = cos
        elif self.kind == "cosface":
            target = cos - m
        else:
            sin = ops.sqrt(1.0 - cos * cos)
            target = cos * ops.cos(m) - sin * ops.sin(m)
            # past theta = pi - m, cos(theta + m) stops decreasing; fall back to a linear
            # penalty there (the usual ArcFace guard) so the logit stays monotonic.
            target = ops.where(cos > ops.cos(math.pi - m), target, cos - ops.sin(math.pi - m) * m)
        one_hot = ops.one_hot(labels, self.num_classes)
        return self.scale * (one_hot * target + (1.0 - one_hot) * cos)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kind": self.kind,
                "scale": self.scale, "margin": self.initial_margin, "subcenters": self.subcenters}


def margins_for_epoch(schedule: str, epoch: int, num_classes: int, margin: float, margin_max: float | None = None,
                      growth: float = 0.0, class_counts: np.ndarray | None = None,
                      margin_min: float | None = None) -> np.ndarray:
    """The per-class margin vector for `epoch` (0-based).

    fixed: `margin` everywhere. linear: `margin + growth * epoch`, capped at `margin_max` (2nd place:
    +0.1 per epoch up to 0.8). dynamic: rarer classes get larger margins, `m_c` between `margin_min`
    and `margin_max` by `n_c ** -0.25` (the adaptive margin of GLR 2020 / 4th place).
    """
    if schedule not in MARGIN_SCHEDULES:
        raise ValueError(f"unknown margin schedule {schedule!r}; choose one of {MARGIN_SCHEDULES}")
    if schedule == "fixed":
        return np.full(num_classes, margin, np.float32)
    if schedule == "linear":
        m = margin + growth * epoch
        return np.full(num_classes, min(m, margin_max) if margin_max is not None else m, np.float32)
    if class_counts is None or len(class_counts) != num_classes:
        raise ValueError("the dynamic margin schedule needs the training image count of every class")
    lo = margin if margin_min is None else margin_min
    hi = margin if margin_max is None else margin_max
    w = np.maximum(np.asarray(class_counts, np.float64), 1.0) ** -0.25
    span = w.max() - w.min()
    t = (w - w.min()) / span if span > 0 else np.zeros_like(w)
    return (lo + (hi - lo) * t).astype(np.float32)
