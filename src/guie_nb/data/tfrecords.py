"""TFRecord shards: the schema, an atomic shard writer, and the parser tf.data uses."""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),  # JPEG bytes
    "label": tf.io.FixedLenFeature([], tf.int64),  # global label (-1 for validation images)
    "source": tf.io.FixedLenFeature([], tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.string),  # 16-character id
}


def serialize(image: bytes, label: int, source: str, image_id: str) -> bytes:
    def b(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feature = {
        "image": b(image),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "source": b(source.encode()),
        "image_id": b(image_id.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: str | Path, examples: list[bytes]) -> None:
    """Write to a temporary name, then rename: no partial shard ever has the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for ex in examples:
            writer.write(ex)
    os.replace(tmp, path)


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
