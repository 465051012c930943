"""tf.data pipelines over the TFRecord shards: augmented training batches and evaluation images.

Both end in the same `resize_images` the exported model uses, so the model sees the same pixels
in training, validation and the scorer.

The training stream is a pure function of (seed, epoch, position): shuffles are seeded per epoch
and every augmentation is a stateless random op keyed by the example's place in the epoch. So a
run resumed at step k of an epoch sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from guie_nb.data.resampling import repeat_records
from guie_nb.data.shard_reader import original_size as _original_size, parse
from guie_nb.model.preprocessing import resize_images

AUTOTUNE = tf.data.AUTOTUNE


def _decode(ex):
    return tf.io.decode_jpeg(ex["image"], channels=3)


def random_resized_crop(image: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.5, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
    """A random crop of `scale` of the area and `ratio` aspect, resized to `size` (float32 0..255)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])  # a slice keeps every channel; static, so batch specs are whole
    return resize_images(crop, size, "squash")


def augment(image: tf.Tensor, size: int, seed: tf.Tensor, jitter: float = 0.1) -> tf.Tensor:
    """Random resized crop, horizontal flip and colour jitter, each from its own stateless seed."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    image = random_resized_crop(image, size, seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if jitter:
        image = tf.image.stateless_random_brightness(image, jitter * 255.0, seeds[2])
        image = tf.image.stateless_random_contrast(image, 1 - jitter, 1 + jitter, seeds[3])
        image = tf.image.stateless_random_saturation(image, 1 - jitter, 1 + jitter, seeds[4])
    return tf.clip_by_value(image, 0.0, 255.0)


def train_dataset(files: list[str | Path], size: int, batch_size: int, seed: int = 0, epoch: int = 0,
                  steps: int | None = None, skip_steps: int = 0, steps_per_execution: int = 1,
                  shuffle_buffer: int = 4096, jitter: float = 0.1, original_size: bool = False,
                  rows: slice | None = None,
                  label_ranges: list[tuple[int, int]] | None = None,
                  class_repeats: np.ndarray | None = None) -> tf.data.Dataset:
    """One epoch of `({"image", "label"}, label)` batches for the margin-head training model.

    `label_ranges`: keep only records whose label lies in one of these `[start, stop)` ranges
    (a subset of the data-prep sources, `prepare.source_labels`); None keeps all.
    `class_repeats`: float `[classes]`, each record read `class_repeats[label]` times per pass in
    expectation (class resampling, `guie_nb.data.resampling.repeat_records`, keyed by seed and
    epoch, before the shuffle); None reads each record once, the stream of before it existed.
    `steps` batches (None: one pass, remainder dropped), starting after `skip_steps` batches;
    batches come stacked `steps_per_execution` at a time: `[steps_per_execution, batch, ...]`.
    Records are skipped before decoding, so resuming mid-epoch costs only reading.
    `original_size`: add `"original_size"`, float32 `[2]` per image, the source image's height and
    width before data-prep's resize (`shard_reader.original_size`), for a `size_features` model.

    `rows`: only rows `rows.start:rows.stop` of every batch (a multi-host process's part of the
    global batch, `guie_nb.training.distributed.process_rows`): batches are then
    `[steps_per_execution, stop - start, ...]`. Every process reads the same records in the same
    order and drops the others' rows before decoding, so the global batches, augmentations
    included, are the same whatever the process count. ValueError for rows outside the batch.
    """
    files = [str(f) for f in files]
    if not files:
        raise ValueError("no training TFRecord files")
    start, stop = (0, batch_size) if rows is None else (rows.start or 0, batch_size if rows.stop is None else rows.stop)
    if not 0 <= start < stop <= batch_size or (rows is not None and rows.step not in (None, 1)):
        raise ValueError(f"rows {rows} is not a block of rows of a batch of {batch_size}")
    epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(files))
    ds = tf.data.Dataset.from_tensor_slices([files[i] for i in order])
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(files)), num_parallel_calls=AUTOTUNE,
                       deterministic=True)
    if label_ranges is not None:  # before the shuffle: the buffer holds only records that are kept
        ds = ds.filter(lambda raw: _label_in(parse(raw)["label"], label_ranges))
    if class_repeats is not None:  # before the shuffle, which spreads a record's copies apart
        ds = repeat_records(ds, class_repeats, seed=int(np.random.default_rng([seed, epoch, 2]).integers(2**31)))
    ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=True)
    if steps is not None:
        ds = ds.repeat().take(steps * batch_size)
    ds = ds.enumerate().skip(skip_steps * batch_size)
    if (start, stop) != (0, batch_size):
        ds = ds.filter(lambda index, raw: tf.logical_and(index % batch_size >= start, index % batch_size < stop))

    def prepare(index, raw):
        ex = parse(raw)
        label = tf.cast(ex["label"], tf.int32)
        example_seed = tf.stack([tf.constant(epoch_seed, tf.int64), index])
        image = _decode(ex)
        inputs = {"image": augment(image, size, example_seed, jitter), "label": label}
        if original_size:
            inputs["original_size"] = _original_size(ex, image)
        return inputs, label

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(stop - start, drop_remainder=True).batch(steps_per_execution, drop_remainder=True)
    return ds.prefetch(AUTOTUNE)


def _label_in(label: tf.Tensor, ranges: list[tuple[int, int]]) -> tf.Tensor:
    if not ranges:
        raise ValueError("label_ranges is empty: no record would be kept")
    label = tf.cast(label, tf.int64)
    return tf.reduce_any(tf.stack([(label >= start) & (label < stop) for start, stop in ranges]))


def eval_dataset(files: list[str | Path], size: int, resize_mode: str, batch_size: int = 64,
                 original_size: bool = False) -> tf.data.Dataset:
    """Batches of `(image, image_id)` resized as the exported model resizes; with `original_size`,
    `({"image", "original_size"}, image_id)` (see `train_dataset`)."""

    def prepare(raw):
        ex = parse(raw)
        image = _decode(ex)
        pixels = resize_images(image, size, resize_mode)
        if original_size:
            return {"image": pixels, "original_size": _original_size(ex, image)}, ex["image_id"]
        return pixels, ex["image_id"]

    ds = tf.data.TFRecordDataset([str(f) for f in files])
    return ds.map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
