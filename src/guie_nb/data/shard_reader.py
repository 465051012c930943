"""Reading data-prep's TFRecord shards with TensorFlow: the schema and the parser tf.data uses.

The shards are written without TensorFlow by `guie_nb.data.shard_writer` (through `tfrecord_format`).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),  # JPEG bytes
    "label": tf.io.FixedLenFeature([], tf.int64),  # global label (-1 for validation images)
    "source": tf.io.FixedLenFeature([], tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.string),  # 16-character id
    # the source image's size before data-prep's max_side resize; 0 in shards written before it was stored
    "original_height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "original_width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def original_size(ex: dict[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
    """float32 `[2]` (height, width) of the source image before data-prep resized it; for a record
    without it (older shards) the stored `image`'s own size, the best that is known."""
    stored = tf.cast(tf.stack([ex["original_height"], ex["original_width"]]), tf.float32)
    decoded = tf.cast(tf.shape(image)[:2], tf.float32)
    return tf.where(stored > 0, stored, decoded)


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    return tf.io.parse_single_example(serialized, FEATURES)


def read_all(files: list[str | Path]) -> list[dict]:
    """Every record of `files` as Python values (validation sets are small)."""
    out = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]):
        ex = parse(raw)
        out.append({
            "image": ex["image"].numpy(),
            "label": int(ex["label"].numpy()),
            "source": ex["source"].numpy().decode(),
            "image_id": ex["image_id"].numpy().decode(),
            "original_size": (int(ex["original_height"].numpy()), int(ex["original_width"].numpy())),
        })
    return out
