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
    head: HeadConfig = field(default_factory=HeadConfig)
    # pretrained backbone, loaded once when training starts fresh (guie_nb.model.weights):
    # "" random init, "open_clip:<tag>", "kaggle:<handle>", or a local file / folder
    backbone_weights: str = ""
    # more backbones run on the same (resized, normalised) image, their features concatenated after
    # the main backbone's before the neck (4th place: ViT-H-14 + ViT-L-14-336 -> PCA 64):
    # [{"backbone": name, "backbone_weights": spec}], each at this model's input size
    extra_backbones: list[dict] = field(default_factory=list)

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
        self.extra_backbones = [self._extra(e) for e in self.extra_backbones]
        for extra, v in zip(self.extra_backbones, self.extra_vits):
            if v.image_size % v.patch_size:
                raise ValueError(f"extra backbone {extra['backbone']}: the model's input size {v.image_size} is not a "
                                 f"multiple of its patch size {v.patch_size}")

    @staticmethod
    def _extra(entry) -> dict:
        if isinstance(entry, str):
            entry = {"backbone": entry}
        if not isinstance(entry, dict) or "backbone" not in entry or set(entry) - {"backbone", "backbone_weights"}:
            raise ValueError(f"extra_backbones entries are {{'backbone': name, 'backbone_weights': spec}}, got {entry!r}")
        vit_config(entry["backbone"])
        return {"backbone": entry["backbone"], "backbone_weights": entry.get("backbone_weights", "")}

    @property
    def vit(self):
        overrides = {"image_size": self.image_size} if self.image_size else {}
        return vit_config(self.backbone, **overrides)

    @property
    def input_size(self) -> int:
        return self.vit.image_size

    @property
    def extra_vits(self) -> list:
        """The extra backbones' configs, at the main backbone's input size."""
        return [vit_config(e["backbone"], image_size=self.input_size) for e in self.extra_backbones]

    @property
    def feature_dim(self) -> int:
        """Width of the features that enter the neck: every backbone's, concatenated."""
        return self.vit.feature_dim + sum(v.feature_dim for v in self.extra_vits)

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

    The ViT is the layer `visual`; `cfg.extra_backbones` add `visual_1`, `visual_2`, ... on the same
    normalised pixels, their features concatenated after `visual`'s (`backbone_concat`).

    `remat`: rematerialise each ViT block in the backward pass (`guie_nb.model.vit.build_vit`); a
    training-time memory saving that changes neither the weights nor the outputs.
    """
    size = cfg.input_size
    pixels = keras.Input((size, size, 3), name="image")
    mean = [255.0 * m for m in CLIP_MEAN]
    var = [(255.0 * s) ** 2 for s in CLIP_STD]
    x = layers.Normalization(mean=mean, variance=var, name="clip_normalize")(pixels)
    features = [build_vit(cfg.vit, name="visual", remat=remat)(x)]
    features += [build_vit(v, name=f"visual_{i}", remat=remat)(x) for i, v in enumerate(cfg.extra_vits, 1)]
    x = features[0] if len(features) == 1 else layers.Concatenate(name="backbone_concat")(features)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    if cfg.hidden_dim:
        x = layers.Dense(cfg.hidden_dim, name="hidden")(x)
    x = layers.Dense(cfg.embedding_dim, name="projection")(x)
    x = L2Normalize(name="l2_normalize")(x)
    return keras.Model(pixels, x, name="embedding_model")


def build_training_model(embedding_model: keras.Model, num_classes: int, head: HeadConfig) -> keras.Model:
    """`[image, label] -> logits` through a margin head; the embedding model's weights are shared."""
    image = keras.Input(embedding_model.input_shape[1:], name="image")
    label = keras.Input((), dtype="int32", name="label")
    embedding = embedding_model(image)
    logits = MarginHead(num_classes, head.kind, head.scale, head.margin, head.subcenters,
                        name="margin_head")([embedding, label])
    return keras.Model([image, label], logits, name="training_model")
