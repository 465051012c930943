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
    (and flip TTA): what an export must reproduce."""
    from guie_nb.model.preprocessing import resize_images

    def embed(image: np.ndarray) -> np.ndarray:
        pixels = np.asarray(resize_images(image[None], cfg.input_size, cfg.resize_mode))
        out = np.asarray(embedding_model.predict_on_batch(pixels), dtype=np.float64).reshape(-1)
        if flip_tta:
            flipped = np.ascontiguousarray(pixels[:, :, ::-1])
            out = out + np.asarray(embedding_model.predict_on_batch(flipped), dtype=np.float64).reshape(-1)
            out = out / max(np.linalg.norm(out), 1e-12)
        return out

    return embed


def compare_with_keras(embed_one: Callable[[np.ndarray], np.ndarray], embedding_model, cfg,
                       sizes: Sequence[tuple[int, int]]) -> dict:
    """Embed probe images with the exported model and with Keras (same resize); report the gap."""
    from guie_nb.model.preprocessing import resize_images

    rows, worst, min_cos, dims = [], 0.0, 1.0, set()
    for image in probe_images(sizes):
        exported = np.asarray(embed_one(image), dtype=np.float64).reshape(-1)
        pixels = np.asarray(resize_images(image[None], cfg.input_size, cfg.resize_mode))
        reference = np.asarray(embedding_model.predict_on_batch(pixels), dtype=np.float64).reshape(-1)
        if exported.shape != reference.shape:
            raise ValueError(f"exported model gives {exported.shape}, Keras gives {reference.shape}")
        diff = float(np.max(np.abs(exported - reference)))
        cos = float(exported @ reference / (np.linalg.norm(exported) * np.linalg.norm(reference)))
        rows.append({"size": list(image.shape[:2]), "max_abs_diff": diff, "cosine": cos})
        worst, min_cos = max(worst, diff), min(min_cos, cos)
        dims.add(exported.shape[0])
    return {"per_size": rows, "max_abs_diff": worst, "min_cosine": min_cos, "embedding_dim": dims.pop()}
