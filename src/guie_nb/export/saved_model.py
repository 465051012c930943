"""TensorFlow SavedModel export in the form the scorer calls.

Signature `serving_default`: uint8 `[1, H, W, 3]` at the image's native size -> dict with
`embedding_norm`, float32 `[1, D]`, L2-normalised. Resize and normalisation are in the graph.
Needs the TensorFlow Keras backend (set `KERAS_BACKEND=tensorflow` before importing keras).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from guie_nb.model.embedding import ModelConfig, embedding_inputs
from guie_nb.model.preprocessing import resize_images

OUTPUT_KEY = "embedding_norm"


class _Serving(tf.Module):
    def __init__(self, embedding_model, cfg: ModelConfig, flip_tta: bool = False):
        super().__init__()
        self.model, self.cfg = embedding_model, cfg
        self.size, self.resize_mode = cfg.input_size, cfg.resize_mode
        self.flip_tta = flip_tta and not cfg.flip_tta  # a flip_tta model mirrors inside itself

    def _embed(self, pixels, original_size):
        return tf.cast(self.model(embedding_inputs(self.cfg, pixels, original_size), training=False), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        # the raw image's height and width, before the resize (ModelConfig.size_features)
        shape = tf.shape(images)
        original_size = tf.tile(tf.cast(shape[1:3], tf.float32)[None], tf.stack([shape[0], 1]))
        pixels = resize_images(images, self.size, self.resize_mode)
        embedding = self._embed(pixels, original_size)
        if self.flip_tta:  # the mirrored image's embedding, summed before the final L2 norm
            embedding += self._embed(tf.reverse(pixels, axis=[2]), original_size)
        return {OUTPUT_KEY: tf.math.l2_normalize(embedding, axis=-1)}


def export_saved_model(embedding_model, cfg: ModelConfig, out_dir: str | Path, flip_tta: bool = False) -> Path:
    """Write the SavedModel to `out_dir` (which must not exist yet); `flip_tta` adds the
    horizontally flipped image's embedding inside the graph (a `cfg.flip_tta` model has it already).
    A `cfg.size_features` model gets the raw image's height and width from the input's shape."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("SavedModel export needs KERAS_BACKEND=tensorflow (set before importing keras); "
                           f"this process runs {keras.backend.backend()!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"export directory exists: {out_dir}")
    module = _Serving(embedding_model, cfg, flip_tta)
    # TF 2.6.4 (the scorer) lacks ops the default saver function uses (DisableCopyOnRead);
    # the scorer never restores through the saver, so skip writing it.
    options = tf.saved_model.SaveOptions(experimental_skip_saver=True)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve}, options=options)
    return out_dir


class SavedModelEmbedder:
    """Embeds images the way the scorer does: one uint8 `[1, H, W, 3]` at a time."""

    def __init__(self, path: str | Path):
        self.loaded = tf.saved_model.load(str(path))
        self.fn = self.loaded.signatures["serving_default"]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
        out = self.fn(tf.constant(image[None]))
        if OUTPUT_KEY not in out:
            raise KeyError(f"SavedModel output has no {OUTPUT_KEY!r}; keys: {sorted(out)}")
        return out[OUTPUT_KEY].numpy().reshape(-1)
