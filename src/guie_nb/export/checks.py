"""Checks that an exported model reproduces the Keras embedding model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def probe_images(sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Deterministic uint8 `[H, W, 3]` test images: smooth structure plus noise, not flat colour."""
    rng = np.random.default_rng(seed)
    images = []
    for h, w in sizes:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(xx / (5 + c) + yy / (7 + 2 * c)) for c in range(3)], -1)
        images.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return images


def keras_reference(embedding_model, cfg, flip_tta: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 RGB `[H, W, 3]` -> the Keras model's embedding, with the exported model's resize
    (and flip TTA; a `cfg.flip_tta` model mirrors inside itself), and for a `cfg.size_features`
    model the raw image's `[H, W]`: what an export must reproduce."""
    from guie_nb.model.embedding import embedding_inputs
    from guie_nb.model.preprocessing import resize_images

    def predict(pixels, original_size):
        out = embedding_model.predict_on_batch(embedding_inputs(cfg, pixels, original_size))
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def embed(image: np.ndarray) -> np.ndarray:
        pixels = np.asarray(resize_images(image[None], cfg.input_size, cfg.resize_mode))
        original_size = np.asarray([image.shape[:2]], np.float32)
        out = predict(pixels, original_size)
        if flip_tta and not cfg.flip_tta:
            out = out + predict(np.ascontiguousarray(pixels[:, :, ::-1]), original_size)
            out = out / max(np.linalg.norm(out), 1e-12)
        return out

    return embed
