"""Margin softmax heads over L2-normalised embeddings: ArcFace (additive angular) and CosFace.

The margin lives in a non-trainable variable so a schedule can change it between epochs without
recompiling the step function.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

HEAD_TYPES = ("arcface", "cosface")


@keras.saving.register_keras_serializable(package="guie_nb")
class MarginHead(layers.Layer):
    """`[embedding, label] -> logits`: s * cos(theta + m) (ArcFace) or s * (cos - m) (CosFace) at the label."""

    def __init__(self, num_classes: int, kind: str = "arcface", scale: float = 30.0,
                 margin: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        if kind not in HEAD_TYPES:
            raise ValueError(f"unknown margin head {kind!r}; choose one of {HEAD_TYPES}")
        if num_classes < 2:
            raise ValueError(f"a margin head needs at least 2 classes, got {num_classes}")
        self.num_classes, self.kind, self.scale, self.initial_margin = num_classes, kind, scale, margin

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.centers = self.add_weight(
            shape=(dim, self.num_classes), initializer="glorot_uniform", name="centers"
        )
        self.margin = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_margin),
            trainable=False, name="margin",
        )

    def cosine(self, embeddings):
        e = ops.normalize(ops.cast(embeddings, "float32"), axis=-1)
        c = ops.normalize(ops.cast(self.centers, "float32"), axis=0)
        return ops.matmul(e, c)

    def call(self, inputs):
        embeddings, labels = inputs
        cos = ops.clip(self.cosine(embeddings), -1.0 + 1e-7, 1.0 - 1e-7)
        m = ops.cast(self.margin, "float32")
        if self.kind == "cosface":
            target = cos - m
        else:
            sin = ops.sqrt(1.0 - cos * cos)
            target = cos * ops.cos(m) - sin * ops.sin(m)
            # past theta = pi - m, cos(theta + m) stops decreasing; fall back to CosFace-like
            # linear penalty there (the usual ArcFace guard) so the logit stays monotonic.
            target = ops.where(cos > ops.cos(math.pi - m), target, cos - ops.sin(math.pi - m) * m)
        one_hot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes)
        return self.scale * (one_hot * target + (1.0 - one_hot) * cos)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kind": self.kind,
                "scale": self.scale, "margin": self.initial_margin}
