"""tf.data pipelines over the TFRecord shards: augmented training batches and evaluation images.

Both end in the same `resize_images` the exported model uses, so the model sees the same pixels
in training, validation and the scorer.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from guie_nb.data.tfrecords import parse
from guie_nb.model.preprocessing import resize_images

AUTOTUNE = tf.data.AUTOTUNE


def _decode(ex):
    return tf.io.decode_jpeg(ex["image"], channels=3)


def random_resized_crop(image: tf.Tensor, size: int, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
    """A random crop of `scale` of the area and `ratio` aspect, resized to `size` (float32 0..255)."""
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return resize_images(crop, size, "squash")


def augment(image: tf.Tensor, size: int) -> tf.Tensor:
    image = random_resized_crop(image, size)
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, 0.1 * 255.0)
    image = tf.image.random_contrast(image, 0.9, 1.1)
    image = tf.image.random_saturation(image, 0.9, 1.1)
    return tf.clip_by_value(image, 0.0, 255.0)


def train_dataset(files: list[str | Path], size: int, batch_size: int, seed: int = 0,
                  shuffle_buffer: int = 4096, repeat: bool = True) -> tf.data.Dataset:
    """Batches of `({"image", "label"}, label)` for the margin-head training model."""
    files = [str(f) for f in files]
    if not files:
        raise ValueError("no training TFRecord files")
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(files)), num_parallel_calls=AUTOTUNE,
                       deterministic=True)
    ds = ds.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        ds = ds.repeat()

    def prepare(raw):
        ex = parse(raw)
        label = tf.cast(ex["label"], tf.int32)
        return {"image": augment(_decode(ex), size), "label": label}, label

    return ds.map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def eval_dataset(files: list[str | Path], size: int, resize_mode: str, batch_size: int = 64) -> tf.data.Dataset:
    """Batches of `(image, image_id)` resized as the exported model resizes."""

    def prepare(raw):
        ex = parse(raw)
        return resize_images(_decode(ex), size, resize_mode), ex["image_id"]

    ds = tf.data.TFRecordDataset([str(f) for f in files])
    return ds.map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
