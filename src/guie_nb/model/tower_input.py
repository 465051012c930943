"""A concatenated backbone at its own resolution: the model's normalised pixels resized in-graph.

An embedding model with `extra_backbones` feeds every tower from one image (`[B, S, S, 3]`, S the
main backbone's input size). A tower trained at another size (4th place: ViT-L-14-336 at 336 px
concatenated with ViT-H-14 at 224 px) gets the image resized from S to its own size T inside the
model, so the Keras model, the SavedModel and the TorchScript file compute the same thing:

    y = clip(R x R^T, lo, hi)      R: [T, S] resize weights, x one channel of the normalised image

`R` is TensorFlow's antialiased bicubic resize (`tf.image.resize(..., "bicubic", antialias=True)`,
its `scale_and_translate` with the Keys cubic kernel, a = -0.5, widened by S / T when shrinking,
each row normalised to sum 1), the pipeline's own resize (`guie_nb.model.preprocessing`), written as
a constant matrix; the same formula as `guie_nb.export.torchscript._resize_weights`. `lo` / `hi` are
0 and 255 in normalised units, per channel: the pipeline clips its resized pixels to 0..255, and
the resize commutes with the per-channel affine normalisation, so this equals resizing the 0..255
pixels, clipping, then normalising.

What the tower sees is the raw image resized twice (raw -> S -> T) where its training run resized
it once (raw -> T). Both are antialiased low-pass resizes of the same region (same `resize_mode`),
so they differ only in fine detail; `guie_nb.model.concat` states it for the export.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """TensorFlow's KeysCubicKernel (a = -0.5), support radius 2."""
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`[out_size, in_size]` float32 weights of TF's antialiased bicubic resize along one axis
    (half-pixel centres, no translation). Raises ValueError for sizes < 1."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be >= 1, got {in_size} -> {out_size}")
    inv_scale = in_size / out_size
    kernel_scale = max(inv_scale, 1.0)  # widen the kernel when shrinking (antialias)
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale
    source = np.arange(in_size, dtype=np.float64) + 0.5
    weights = keys_cubic((source[None, :] - sample[:, None]) / kernel_scale)
    total = weights.sum(axis=1, keepdims=True)
    return (weights / np.where(np.abs(total) > 1e-30, total, 1.0)).astype(np.float32)


def normalised_pixel_range() -> tuple[np.ndarray, np.ndarray]:
    """`(lo, hi)`, `[3]` float32: pixel values 0 and 255 after CLIP normalisation, per channel."""
    mean, std = 255.0 * np.asarray(CLIP_MEAN), 255.0 * np.asarray(CLIP_STD)
    return ((0.0 - mean) / std).astype(np.float32), ((255.0 - mean) / std).astype(np.float32)


@keras.saving.register_keras_serializable(package="guie_nb")
class TowerResize(keras.layers.Layer):
    """Normalised NHWC `[B, in_size, in_size, 3]` -> `[B, out_size, out_size, 3]` (module docstring).
    No weights: the matrix is a constant of the graph, so models with and without it share weights."""

    def __init__(self, in_size: int, out_size: int, **kwargs):
        super().__init__(**kwargs)
        self.in_size, self.out_size = int(in_size), int(out_size)
        self._matrix = resize_matrix(self.in_size, self.out_size)
        self._lo, self._hi = normalised_pixel_range()

    def call(self, x):
        r = ops.cast(self._matrix, x.dtype)
        y = ops.einsum("oh,bhwc->bowc", r, x)  # rows
        y = ops.einsum("pw,bowc->bopc", r, y)  # columns
        return ops.minimum(ops.maximum(y, ops.cast(self._lo, x.dtype)), ops.cast(self._hi, x.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.out_size, self.out_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "in_size": self.in_size, "out_size": self.out_size}
