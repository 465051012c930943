"""The model factory: backbone -> projection to <= 64-d -> L2 norm, plus the margin-head trainer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
from keras import layers, ops

from guie_nb.model.backbones import vit_config
from guie_nb.model.margin_heads import HEAD_TYPES, MARGIN_SCHEDULES, MarginHead
from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD, check_resize_mode
from guie_nb.model.vit import build_vit

MAX_EMBEDDING_DIM = 64  # the competition's limit


@dataclass
class HeadConfig:
    kind: str = "arcface"  # arcface | cosface | softmax
    scale: float = 30.0
    margin: float = 0.3
    subcenters: int = 1  # k > 1: sub-center ArcFace/CosFace
    margin_schedule: str = "fixed"  # fixed | linear (grows per epoch) | dynamic (per class size)
    margin_growth: float = 0.0  # linear: added per epoch
    margin_min: float | None = None  # dynamic: the largest classes' margin (default: margin)
    margin_max: float | None = None  # linear: the cap; dynamic: the smallest classes' margin

    def __post_init__(self):
        if self.kind not in HEAD_TYPES:
            raise ValueError(f"unknown head kind {self.kind!r}; choose one of {HEAD_TYPES}")
        if self.margin_schedule not in MARGIN_SCHEDULES:
            raise ValueError(f"unknown margin_schedule {self.margin_schedule!r}; choose one of {MARGIN_SCHEDULES}")
        if self.subcenters < 1:
            raise ValueError(f"subcenters must be >= 1, got {self.subcenters}")


@dataclass
class ModelConfig:
    backbone: str = "demo-tiny"
    image_size: int | None = None  # None: the backbone's native size
    resize_mode: str = "squash"
    embedding_dim: int = 64
    hidden_dim: int | None = None  # the seed's 256 -> 64 variant: hidden_dim=256
    dropout: float = 0.2
    # BatchNorm on the backbone features before dropout and the projection (5th place: BN -> Linear)
    neck_batchnorm: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    # pretrained backbone, loaded once when training starts fresh (guie_nb.model.weights):
    # "" random init, "open_clip:<tag>", "kaggle:<handle>", or a local file / folder
    backbone_weights: str = ""

    def __post_init__(self):
        if isinstance(self.head, dict):
            known = {f.name for f in fields(HeadConfig)}
            unknown = sorted(set(self.head) - known)
            if unknown:
                raise ValueError(f"unknown head config keys: {unknown}; known: {sorted(known)}")
            self.head = HeadConfig(**self.head)
        if not 1 <= self.embedding_dim <= MAX_EMBEDDING_DIM:
            raise ValueError(f"embedding_dim must be in 1..{MAX_EMBEDDING_DIM}, got {self.embedding_dim}")
        check_resize_mode(self.resize_mode)
        vit_config(self.backbone)  # fails early on an unknown name

    @property
    def vit(self):
        overrides = {"image_size": self.image_size} if self.image_size else {}
        return vit_config(self.backbone, **overrides)

    @property
    def input_size(self) -> int:
        return self.vit.image_size

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


@keras.saving.register_keras_serializable(package="guie_nb")
class L2Normalize(layers.Layer):
    """Unit-length float32 embeddings, as the scorer's Euclidean kNN expects."""

    def call(self, x):
        return ops.normalize(ops.cast(x, "float32"), axis=-1)


def build_embedding_model(cfg: ModelConfig, remat: bool = False) -> keras.Model:
    """float32 RGB `[B, S, S, 3]` in 0..255 -> L2-normalised embedding `[B, embedding_dim]`.

    `remat`: rematerialise each ViT block in the backward pass (`guie_nb.model.vit.build_vit`); a
    training-time memory saving that changes neither the weights nor the outputs.
    """
    size = cfg.input_size
    pixels = keras.Input((size, size, 3), name="image")
    mean = [255.0 * m for m in CLIP_MEAN]
    var = [(255.0 * s) ** 2 for s in CLIP_STD]
    x = layers.Normalization(mean=mean, variance=var, name="clip_normalize")(pixels)
    x = build_vit(cfg.vit, name="visual", remat=remat)(x)
    return keras.Model(pixels, apply_neck(cfg, x), name="embedding_model")


def apply_neck(cfg: ModelConfig, features, reuse: keras.Model | None = None):
    """The neck: backbone features `[B, feature_dim]` -> [BatchNorm] -> Dropout -> [hidden Dense]
    -> projection Dense -> L2 norm, `[B, embedding_dim]` float32.

    New layers, or with `reuse` the layers of that model (an embedding model), found by name, so a
    second graph over the same variables can start from cached backbone features
    (`guie_nb.training.cached`). The names are the weight files' and the parameter groups'.
    """

    def layer(name: str, make):
        return reuse.get_layer(name) if reuse is not None else make()

    x = features
    if cfg.neck_batchnorm:
        x = layer("neck_bn", lambda: layers.BatchNormalization(name="neck_bn"))(x)
    x = layer("dropout", lambda: layers.Dropout(cfg.dropout, name="dropout"))(x)
    if cfg.hidden_dim:
        x = layer("hidden", lambda: layers.Dense(cfg.hidden_dim, name="hidden"))(x)
    x = layer("projection", lambda: layers.Dense(cfg.embedding_dim, name="projection"))(x)
    return layer("l2_normalize", lambda: L2Normalize(name="l2_normalize"))(x)


def build_training_model(embedding_model: keras.Model, num_classes: int, head: HeadConfig) -> keras.Model:
    """`[image, label] -> logits` through a margin head; the embedding model's weights are shared."""
    image = keras.Input(embedding_model.input_shape[1:], name="image")
    label = keras.Input((), dtype="int32", name="label")
    embedding = embedding_model(image)
    logits = MarginHead(num_classes, head.kind, head.scale, head.margin, head.subcenters,
                        name="margin_head")([embedding, label])
    return keras.Model([image, label], logits, name="training_model")
