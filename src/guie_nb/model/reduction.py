"""PCA and PCA-whitening to <= 64-d, fitted on backbone features and stored in the model's own
`projection` Dense layer.

The exported model needs no new layer: for features `x` (`[N, D]`, what feeds `projection`: the
backbone's output, or the `hidden` layer's when there is one), mean `mu` (`[D]`) and the top-`d`
eigenvectors `V` (`[D, d]`, columns by decreasing eigenvalue `lam`) of their covariance,

    pca:    y = (x - mu) @ V                        kernel = V
    whiten: y = (x - mu) @ V / sqrt(lam + eps)      kernel = V / sqrt(lam + eps)

with `bias = -mu @ kernel`, so `projection(x) = x @ kernel + bias` is exactly the reduction and the
model's `l2_normalize` follows it. SavedModel and TorchScript export copy `projection` as any
trained Dense, so both formats carry the reduction.

Source: the 4th-place GUIE team's zero-shot notebook (CLIP features + PCA to 64-d, 0.603 private;
`IvanAer/G-Universal-CLIP`); PCA-whitening of CNN/CLIP descriptors for retrieval as in Jégou &
Chum, "Negative evidences and co-occurrences in image retrieval" (ECCV 2012) and Radenović et al.
(TPAMI 2018). The eigen-decomposition is numpy's `eigh` of the float64 covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REDUCTIONS = ("pca", "whiten")
PROJECTION_LAYER = "projection"


@dataclass(frozen=True)
class Reduction:
    """A fitted reduction as an affine map: `y = x @ kernel + bias`.

    `kernel` `[D, d]` float32, `bias` `[d]` float32, `mean` `[D]`, `eigenvalues` `[d]` (the
    feature variance along each component, descending), `explained` = sum of `eigenvalues` over
    the total variance (0..1), `samples` the number of feature rows it was fitted on.
    """

    kind: str
    kernel: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    eigenvalues: np.ndarray
    explained: float
    samples: int

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.kernel.astype(np.float64) + self.bias

    def summary(self) -> dict:
        return {"kind": self.kind, "dim": int(self.kernel.shape[1]), "feature_dim": int(self.kernel.shape[0]),
                "samples": self.samples, "explained_variance": round(float(self.explained), 6),
                "eigenvalue_range": [float(self.eigenvalues[-1]), float(self.eigenvalues[0])]}


def fit_reduction(features: np.ndarray, dim: int, kind: str = "pca", eps: float = 1e-6) -> Reduction:
    """Fit PCA (`kind="pca"`) or PCA-whitening (`"whiten"`) of `features` `[N, D]` to `dim` components.

    Mean-centred; covariance with the 1/(N-1) normaliser; components signed so that each one's
    largest-magnitude entry is positive (a deterministic choice: eigenvectors are defined up to
    sign). Whitening divides component j by `sqrt(eigenvalue_j + eps)` (`eps` absolute, in the
    features' squared units, guards near-zero variance).

    Raises ValueError for an unknown kind, non-finite features, `dim` > D, or fewer than `dim + 1`
    rows (the centred covariance would have rank < dim: the missing components are noise).
    """
    if kind not in REDUCTIONS:
        raise ValueError(f"unknown reduction {kind!r}; choose one of {REDUCTIONS}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    n, d_in = x.shape
    if not 1 <= dim <= d_in:
        raise ValueError(f"cannot reduce {d_in}-d features to {dim} components (need 1 <= dim <= {d_in})")
    if n < dim + 1:
        raise ValueError(f"{n} feature rows cannot fit {dim} components: the sample needs at least {dim + 1} "
                         "images (raise sample_images)")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf: the backbone's output is not finite")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (n - 1)
    eigenvalues, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigenvalues)[::-1][:dim]
    lam = np.clip(eigenvalues[order], 0.0, None)  # eigh can return -1e-17 for a zero eigenvalue
    v = vectors[:, order]
    signs = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(dim)])
    v = v * np.where(signs == 0, 1.0, signs)
    kernel = v / np.sqrt(lam + eps) if kind == "whiten" else v
    total = float(np.clip(eigenvalues, 0.0, None).sum())
    return Reduction(kind=kind, kernel=kernel.astype(np.float32), bias=(-mean @ kernel).astype(np.float32),
                     mean=mean, eigenvalues=lam, explained=float(lam.sum() / total) if total > 0 else 0.0,
                     samples=n)


def feature_model(embedding_model):
    """image -> the features that feed `projection` (`[B, D]`), sharing `embedding_model`'s layers."""
    import keras

    try:
        layer = embedding_model.get_layer(PROJECTION_LAYER)
    except ValueError as err:
        raise ValueError(f"model {embedding_model.name!r} has no {PROJECTION_LAYER!r} layer to hold the reduction") \
            from err
    return keras.Model(embedding_model.input, layer.input, name="features")


def set_projection(embedding_model, reduction: Reduction) -> None:
    """Write `reduction` into the model's `projection` Dense (kernel and bias); shapes must match."""
    dense = embedding_model.get_layer(PROJECTION_LAYER)
    want = tuple(dense.kernel.shape)
    if reduction.kernel.shape != want:
        raise ValueError(f"reduction kernel {reduction.kernel.shape} does not fit the projection {want}: "
                         "embedding_dim and the backbone's feature width must match the fit")
    dense.kernel.assign(reduction.kernel)
    dense.bias.assign(reduction.bias)


def sample_features(embedding_model, size: int, resize_mode: str, files, sample_images: int,
                    batch_size: int = 64) -> np.ndarray:
    """Features (`feature_model`) of the first `sample_images` images of the TFRecord `files`,
    resized as the exported model resizes (no augmentation). Data-prep writes its training shards
    shuffled, so the first images are a random sample across classes and sources.
    Raises ValueError when `sample_images` < 1."""
    from guie_nb.data.pipeline import eval_dataset

    if sample_images < 1:
        raise ValueError(f"sample_images must be >= 1, got {sample_images}")
    features = feature_model(embedding_model)
    batches = math.ceil(sample_images / batch_size)
    out = [np.asarray(features.predict_on_batch(images.numpy()))
           for images, _ in eval_dataset(files, size, resize_mode, batch_size).take(batches)]
    return np.concatenate(out)[:sample_images] if out else np.zeros((0, 0), np.float32)


def fit_model_reduction(embedding_model, cfg, files, kind: str, sample_images: int, eps: float = 1e-6,
                        batch_size: int = 64) -> Reduction:
    """Fit `kind` on `sample_images` training images' features and store it in `projection`.

    `cfg`: the model's `ModelConfig` (input size, resize mode, `embedding_dim` = components).
    """
    if getattr(cfg, "size_features", False):
        raise ValueError("a reduction cannot be fitted on a size_features model: its features include the raw "
                         "image sizes, which the resized training sample does not carry")
    feats = sample_features(embedding_model, cfg.input_size, cfg.resize_mode, files, sample_images, batch_size)
    if len(feats) < sample_images:
        print(f"note: the training shards hold {len(feats)} images, fewer than sample_images={sample_images}")
    reduction = fit_reduction(feats, cfg.embedding_dim, kind, eps)
    set_projection(embedding_model, reduction)
    return reduction
