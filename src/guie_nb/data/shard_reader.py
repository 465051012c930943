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
}


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
        })
    return out
