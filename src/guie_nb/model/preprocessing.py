"""Image pre-processing shared by the tf.data pipelines and the exported SavedModel.

The scorer hands the model a raw uint8 image of any size, so the resize lives inside the exported
graph; training and evaluation call the same function so the model sees the same pixels. The
CLIP mean/std normalisation is a layer of the Keras embedding model itself.
"""

from __future__ import annotations

import tensorflow as tf

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# "shortest_side_crop": open_clip's eval transform (shortest side to `size`, bicubic, centre crop),
# sizes and offsets exactly as torchvision's `Resize(size)` + `CenterCrop(size)`.
# "squash": resize both sides to `size` directly (keeps the whole image, changes the aspect).
RESIZE_MODES = ("shortest_side_crop", "squash")


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    return mode


def torchvision_resize_size(h: int, w: int, size: int) -> tuple[int, int]:
    """`(new_h, new_w)` of torchvision's `Resize(size)` (an int: the short side) for an `h x w` image.

    torchvision's `_compute_resized_output_size`: the short side becomes `size`, the long side
    `int(size * long / short)`, i.e. floored. Integer floor division gives the same value (the
    exact quotient is at least `1 / short` from the next integer, far above float64 rounding).
    Plain ints, so TorchScript compiles it (`guie_nb.export.torchscript`).
    """
    if h <= w:
        return size, size * w // h
    return size * h // w, size


def center_crop_offset(length: int, size: int) -> int:
    """torchvision `center_crop`'s offset `int(round((length - size) / 2))` (round half to even),
    in integer arithmetic: `k = d // 2`, plus 1 when `d` is odd and `k` is odd. Works on ints, int
    tensors and in TorchScript."""
    d = length - size
    k = d // 2
    return k + (d % 2) * (k % 2)


def _resize_size_tf(h: tf.Tensor, w: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`torchvision_resize_size` on int32 scalar tensors, without Python branches (graph-safe)."""
    new_long = size * tf.maximum(h, w) // tf.minimum(h, w)
    short_is_h = h <= w
    return tf.where(short_is_h, size, new_long), tf.where(short_is_h, new_long, size)


def resize_images(images: tf.Tensor, size: int, mode: str) -> tf.Tensor:
    """uint8 or float `[H, W, 3]` / `[B, H, W, 3]` in 0..255 -> float32 `[..., size, size, 3]` in 0..255."""
    check_resize_mode(mode)
    images = tf.cast(images, tf.float32)
    if mode == "squash":
        out = tf.image.resize(images, (size, size), method="bicubic", antialias=True)
        return tf.clip_by_value(out, 0.0, 255.0)
    shape = tf.shape(images)
    new_h, new_w = _resize_size_tf(shape[-3], shape[-2], size)
    out = tf.image.resize(images, tf.stack([new_h, new_w]), method="bicubic", antialias=True)
    top, left = center_crop_offset(new_h, size), center_crop_offset(new_w, size)
    out = out[..., top : top + size, left : left + size, :]
    out = tf.clip_by_value(out, 0.0, 255.0)
    static = images.shape[:-3].as_list() + [size, size, 3]
    return tf.ensure_shape(out, static)
