"""Data: source readers in the real layouts, the demo generator, TFRecord shards, tf.data."""
