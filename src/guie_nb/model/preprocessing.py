"""Image pre-processing shared by the tf.data pipelines and the exported SavedModel.

The scorer hands the model a raw uint8 image of any size, so the resize lives inside the exported
graph; training and evaluation call the same function so the model sees the same pixels. The
CLIP mean/std normalisation is a layer of the Keras embedding model itself.
"""

from __future__ import annotations

import tensorflow as tf

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# "shortest_side_crop": open_clip's eval transform (shortest side to `size`, bicubic, centre crop).
# "squash": resize both sides to `size` directly (keeps the whole image, changes the aspect).
RESIZE_MODES = ("shortest_side_crop", "squash")


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    return mode


def resize_images(images: tf.Tensor, size: int, mode: str) -> tf.Tensor:
    """uint8 or float `[H, W, 3]` / `[B, H, W, 3]` in 0..255 -> float32 `[..., size, size, 3]` in 0..255."""
    check_resize_mode(mode)
    images = tf.cast(images, tf.float32)
    if mode == "squash":
        out = tf.image.resize(images, (size, size), method="bicubic", antialias=True)
        return tf.clip_by_value(out, 0.0, 255.0)
    shape = tf.shape(images)
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    scale = float(size) / tf.minimum(h, w)
    # round like torchvision's Resize(int): the short side becomes exactly `size`
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), size)
    out = tf.image.resize(images, tf.stack([new_h, new_w]), method="bicubic", antialias=True)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    out = out[..., top : top + size, left : left + size, :]
    out = tf.clip_by_value(out, 0.0, 255.0)
    static = images.shape[:-3].as_list() + [size, size, 3]
    return tf.ensure_shape(out, static)
