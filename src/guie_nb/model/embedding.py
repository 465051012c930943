"""The model factory: backbone -> projection to <= 64-d -> L2 norm, plus the margin-head trainer."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from guie_nb.model.backbones import vit_config
from guie_nb.model.margin_heads import HEAD_TYPES, MARGIN_SCHEDULES, MarginHead
from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD, check_resize_mode
from guie_nb.model.tower_input import TowerResize
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
    # BatchNorm on the neck's input (backbone feature [+ size features]) before the dropout and
    # projection branches (5th place: BN -> Linear)
    neck_batchnorm: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    # pretrained backbone, loaded once when training starts fresh (guie_nb.model.weights):
    # "" random init, "open_clip:<tag>", "kaggle:<handle>", or a local file / folder
    backbone_weights: str = ""
    # more backbones run on the same (resized, normalised) image, their features concatenated after
    # the main backbone's before the neck (4th place: ViT-L-14-336 + ViT-H-14 -> PCA 64):
    # [{"backbone": name, "backbone_weights": spec[, "image_size": px]}]; a tower with its own
    # `image_size` sees the model's pixels resized in-graph to it (`guie_nb.model.tower_input`),
    # without one it runs at this model's input size
    extra_backbones: list[dict] = field(default_factory=list)
    # the patch conv's stride (None: the patch size); below it the patches overlap and the position
    # embeddings are resampled to the larger grid when weights are loaded (1st place: 14 -> 12 at 290 px)
    patch_stride: int | None = None
    # N parallel Dropout -> [hidden ->] projection branches, averaged before the L2 norm (3rd place: 20)
    neck_branches: int = 1
    # [ln(h/500), ln(w/500), ln(w/h)] of the raw image joined to the backbone feature (5th place)
    size_features: bool = False
    # inference embeds the image and its mirror: the L2-normalised mean of both (2nd place)
    flip_tta: bool = False

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
        if self.neck_branches < 1:
            raise ValueError(f"neck_branches must be >= 1, got {self.neck_branches}")
        self.vit.check_geometry()  # image size, patch size and stride fit together
        self.extra_backbones = [self._extra(e) for e in self.extra_backbones]
        for extra, v in zip(self.extra_backbones, self.extra_vits):
            if v.image_size % v.patch_size:
                size = "its image_size" if "image_size" in extra else "the model's input size"
                raise ValueError(f"extra backbone {extra['backbone']}: {size} {v.image_size} is not a "
                                 f"multiple of its patch size {v.patch_size}")

    @staticmethod
    def _extra(entry) -> dict:
        if isinstance(entry, str):
            entry = {"backbone": entry}
        keys = {"backbone", "backbone_weights", "image_size"}
        if not isinstance(entry, dict) or "backbone" not in entry or set(entry) - keys:
            raise ValueError("extra_backbones entries are {'backbone': name, 'backbone_weights': spec[, 'image_size': "
                             f"px]}}, got {entry!r}")
        vit_config(entry["backbone"])
        out = {"backbone": entry["backbone"], "backbone_weights": entry.get("backbone_weights", "")}
        size = entry.get("image_size")
        if size is not None:  # only when given: configs saved before the key existed compare equal
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"extra backbone {entry['backbone']}: image_size must be a positive int, got {size!r}")
            out["image_size"] = size
        return out

    @property
    def vit(self):
        overrides = {"image_size": self.image_size} if self.image_size else {}
        if self.patch_stride:
            overrides["patch_stride"] = self.patch_stride
        return vit_config(self.backbone, **overrides)

    @property
    def input_size(self) -> int:
        return self.vit.image_size

    @property
    def extra_vits(self) -> list:
        """The extra backbones' configs, each at its own `image_size`, else the main input size."""
        return [vit_config(e["backbone"], image_size=e.get("image_size") or self.input_size)
                for e in self.extra_backbones]

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


ORIGINAL_SIZE = "original_size"  # the second input of a `size_features` model
SIZE_REFERENCE_PX = 500.0  # ln(side / 500): 0 for a typical 500 px photo side
SIZE_FEATURES = 3


def size_features(height, width):
    """`[ln(h / 500), ln(w / 500), ln(w / h)]` of the raw image (sides clamped to >= 1 px), float32.

    Log scale because image sides are multiplicative: the scorer's images run from a few pixels to
    thousands, and a log keeps a 2x change the same step at every size and portrait / landscape
    aspects symmetric about 0 (a plain `/ 1000` would crowd the small images near 0 and let a huge
    one dominate the neck's input). The aspect is w/h (5th place's [h, w, aspect]); its log is the
    difference of the first two, kept because the recipe states it and the neck may weight it alone.
    Written with `keras.ops`; `guie_nb.export.torchscript` repeats the formula.
    """
    h = ops.log(ops.maximum(ops.cast(height, "float32"), 1.0))
    w = ops.log(ops.maximum(ops.cast(width, "float32"), 1.0))
    ref = math.log(SIZE_REFERENCE_PX)
    return ops.stack([h - ref, w - ref, w - h], axis=-1)


@keras.saving.register_keras_serializable(package="guie_nb")
class SizeFeatures(layers.Layer):
    """Raw image sides `[B, 2]` (height, width in pixels, before any resize) -> `[B, 3]` (`size_features`)."""

    def call(self, original_size):
        return size_features(original_size[:, 0], original_size[:, 1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], SIZE_FEATURES)


@keras.saving.register_keras_serializable(package="guie_nb")
class MirrorBatch(layers.Layer):
    """Flip TTA, first half: at inference `[B, ...]` -> `[2B, ...]`, the batch then its horizontal
    mirror (`mirror=False`: the batch twice, for inputs a mirror does not change, such as the image
    size); in training the input unchanged (TTA is a test-time step, and training batches are flipped
    at random by the pipeline already). Images are NHWC: the mirror reverses axis 2."""

    def __init__(self, mirror: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.mirror = mirror

    def call(self, x, training=None):
        if training:
            return x
        return ops.concatenate([x, ops.flip(x, axis=2) if self.mirror else x], axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mirror": self.mirror}


@keras.saving.register_keras_serializable(package="guie_nb")
class MirrorMean(layers.Layer):
    """Flip TTA, second half: at inference `[2B, D]` unit embeddings (image, then mirror) -> `[B, D]`,
    their mean L2-normalised again (normalising the sum gives the same vector); in training unchanged."""

    def call(self, x, training=None):
        if training:
            return x
        pairs = ops.reshape(x, (2, -1, ops.shape(x)[-1]))
        return ops.normalize(pairs[0] + pairs[1], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def _neck(x, cfg: ModelConfig, reuse: keras.Model | None = None):
    """[`neck_bn` BatchNorm ->] `cfg.neck_branches` parallel Dropout -> [hidden ->] projection
    branches, averaged.

    One branch keeps the names every earlier run used (`dropout`, `hidden`, `projection`), so its
    weights load unchanged; N > 1 names branch i's layers `dropout_i`, `hidden_i`, `projection_i`.
    Each Dropout draws its own mask, so the branches see different features in training
    (3rd place: 20 dense + dropout heads averaged). With `reuse` (an embedding model) the layers
    are that model's, found by name, so a second graph over the same variables can start from
    cached backbone features (`guie_nb.training.cached`)."""

    def layer(name: str, make):
        return reuse.get_layer(name) if reuse is not None else make()

    if cfg.neck_batchnorm:
        x = layer("neck_bn", lambda: layers.BatchNormalization(name="neck_bn"))(x)
    n = cfg.neck_branches
    outputs = []
    for i in range(n):
        suffix = "" if n == 1 else f"_{i}"
        y = layer(f"dropout{suffix}", lambda: layers.Dropout(cfg.dropout, name=f"dropout{suffix}"))(x)
        if cfg.hidden_dim:
            y = layer(f"hidden{suffix}", lambda: layers.Dense(cfg.hidden_dim, name=f"hidden{suffix}"))(y)
        outputs.append(layer(f"projection{suffix}",
                             lambda: layers.Dense(cfg.embedding_dim, name=f"projection{suffix}"))(y))
    return outputs[0] if n == 1 else layer("neck_mean", lambda: layers.Average(name="neck_mean"))(outputs)


def apply_neck(cfg: ModelConfig, features, reuse: keras.Model, original_size=None):
    """`reuse`'s (an embedding model's) layers from the backbone feature on, without flip TTA:
    features `[B, feature_dim]` [and with `cfg.size_features` `original_size` `[B, 2]`] ->
    L2-normalised embedding `[B, embedding_dim]` float32 (what `guie_nb.training.cached` trains)."""
    x = features
    if cfg.size_features:
        sizes = reuse.get_layer("size_features")(original_size)
        x = reuse.get_layer("with_size_features")([x, sizes])
    return reuse.get_layer("l2_normalize")(_neck(x, cfg, reuse))


def build_embedding_model(cfg: ModelConfig, remat: bool = False) -> keras.Model:
    """float32 RGB `[B, S, S, 3]` in 0..255 -> L2-normalised embedding `[B, embedding_dim]`.

    The ViT is the layer `visual`; `cfg.extra_backbones` add `visual_1`, `visual_2`, ... on the same
    normalised pixels (a tower with its own `image_size` through `visual_<i>_resize`, an in-graph
    antialiased bicubic resize: `guie_nb.model.tower_input`), their features concatenated after
    `visual`'s (`backbone_concat`).

    With `cfg.size_features` the model takes a second input, `original_size`: float32 `[B, 2]`, the
    raw image's height and width in pixels before any resize (`embedding_inputs` builds the inputs).
    With `cfg.flip_tta`, inference (`training` false or unset) returns the L2-normalised mean of the
    image's and its mirror's embeddings; training runs the plain model. Neither adds a weight, so
    weights move freely between models that differ only in `flip_tta`.
    `remat`: rematerialise each ViT block in the backward pass (`guie_nb.model.vit.build_vit`); a
    training-time memory saving that changes neither the weights nor the outputs.
    """
    size = cfg.input_size
    pixels = keras.Input((size, size, 3), name="image")
    inputs = [pixels]
    mean = [255.0 * m for m in CLIP_MEAN]
    var = [(255.0 * s) ** 2 for s in CLIP_STD]
    x = layers.Normalization(mean=mean, variance=var, name="clip_normalize")(pixels)
    if cfg.flip_tta:
        x = MirrorBatch(name="flip_tta_images")(x)
    features = [build_vit(cfg.vit, name="visual", remat=remat)(x)]
    for i, v in enumerate(cfg.extra_vits, 1):
        # a tower at its own resolution sees the normalised pixels resized in-graph (no weights)
        tower_x = x if v.image_size == size else TowerResize(size, v.image_size, name=f"visual_{i}_resize")(x)
        features.append(build_vit(v, name=f"visual_{i}", remat=remat)(tower_x))
    x = features[0] if len(features) == 1 else layers.Concatenate(name="backbone_concat")(features)
    if cfg.size_features:
        original_size = keras.Input((2,), name=ORIGINAL_SIZE)
        inputs.append(original_size)
        # float32 layers: under mixed_bfloat16 a bf16 input would round a 3000 px side to 3008
        sizes = SizeFeatures(name="size_features", dtype="float32")(original_size)
        if cfg.flip_tta:
            sizes = MirrorBatch(mirror=False, name="flip_tta_sizes")(sizes)
        x = layers.Concatenate(name="with_size_features")([x, sizes])  # the neck sees [feature, h, w, aspect]
    x = L2Normalize(name="l2_normalize")(_neck(x, cfg))
    if cfg.flip_tta:
        x = MirrorMean(name="flip_tta_mean", dtype="float32")(x)  # float32 out, like L2Normalize
    return keras.Model(inputs if len(inputs) > 1 else pixels, x, name="embedding_model")


def embedding_inputs(cfg: ModelConfig, pixels, original_size=None):
    """What `build_embedding_model(cfg)` is called with: `pixels` `[B, S, S, 3]` alone, or with
    `cfg.size_features` the dict `{"image": pixels, "original_size": [B, 2]}`. `original_size`:
    `[B, 2]` (height, width) of the raw images; None takes the pixels' own size (an image fed at
    the model's resolution, e.g. a benchmark). Numpy in, numpy out; a tensor stays a tensor."""
    if not cfg.size_features:
        return pixels
    if original_size is None:
        original_size = np.tile(np.asarray(pixels.shape[1:3], np.float32), (pixels.shape[0], 1))
    return {"image": pixels, ORIGINAL_SIZE: original_size}


def build_training_model(embedding_model: keras.Model, num_classes: int, head: HeadConfig) -> keras.Model:
    """`[image, label(, original_size)] -> logits` through a margin head; the embedding model's
    weights are shared. A `size_features` embedding model adds its `original_size` input."""
    image = keras.Input(embedding_model.inputs[0].shape[1:], name="image")
    label = keras.Input((), dtype="int32", name="label")
    if len(embedding_model.inputs) > 1:
        original_size = keras.Input((2,), name=ORIGINAL_SIZE)
        inputs = [image, label, original_size]
        embedding = embedding_model({"image": image, ORIGINAL_SIZE: original_size})
    else:
        inputs = [image, label]
        embedding = embedding_model(image)
    logits = MarginHead(num_classes, head.kind, head.scale, head.margin, head.subcenters,
                        name="margin_head")([embedding, label])
    return keras.Model(inputs, logits, name="training_model")
