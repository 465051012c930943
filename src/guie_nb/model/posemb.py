"""Position-embedding interpolation and rebuilding a model at a new image size, weights carried.

Higher-resolution fine-tuning (1st place: 224 -> 280), or overlapping patches (a patch stride
below the patch size, 1st place's 290 px stage at stride 12) change the patch grid, so the learned
positional embedding is resampled like open_clip's `resize_pos_embed`: the class token is kept,
the grid is resized with `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`.
torch's antialiased bicubic is PIL's filter (cubic a=-0.5, support widened by the scale when
shrinking, weights renormalised at the borders); it is written here in numpy so every backend
(and a notebook without torch) gets the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import replace

import keras
import numpy as np


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`[out, in]` weights of torch's antialiased bicubic resize along one axis."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # the filter widens only when downsampling
    centers = (np.arange(out_size) + 0.5) * scale
    taps = np.arange(in_size) + 0.5
    weights = _cubic((taps[None, :] - centers[:, None]) / support)
    # torch/PIL only visit taps in [center - 2*support, center + 2*support): same as cubic's zeros
    return weights / weights.sum(axis=1, keepdims=True)


def resample_grid(grid: np.ndarray, new_size: int | tuple[int, int]) -> np.ndarray:
    """`[H, W, C]` -> `[H', W', C]`, antialiased bicubic (float64 internally)."""
    new_h, new_w = (new_size, new_size) if isinstance(new_size, int) else new_size
    rows = _resize_matrix(grid.shape[0], new_h)
    cols = _resize_matrix(grid.shape[1], new_w)
    out = np.einsum("ah,hwc,bw->abc", rows, grid.astype(np.float64), cols)
    return out.astype(grid.dtype)


def resample_pos_embed(pos_embed: np.ndarray, new_grid: int, extra_tokens: int = 1) -> np.ndarray:
    """open_clip `[extra + g*g, C]` positional embedding -> `[extra + new_grid**2, C]`."""
    pos_embed = np.asarray(pos_embed)
    tokens, grid = pos_embed[:extra_tokens], pos_embed[extra_tokens:]
    old = math.isqrt(grid.shape[0])
    if old * old != grid.shape[0]:
        raise ValueError(f"positional embedding has {grid.shape[0]} grid tokens, not a square grid")
    if old == new_grid:
        return pos_embed
    grid = resample_grid(grid.reshape(old, old, -1), new_grid).reshape(new_grid * new_grid, -1)
    return np.concatenate([tokens, grid], axis=0)


def carry_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """Copies every weight of `source` into the same-architecture `target` (matched by variable
    path); positional embeddings of another grid are resampled, any other mismatch is an error."""
    by_path = {v.path: v for v in source.weights}
    missing = [v.path for v in target.weights if v.path not in by_path]
    if missing or len(by_path) != len(target.weights):
        extra = sorted(set(by_path) - {v.path for v in target.weights})
        raise ValueError(f"models differ: target-only {missing[:5]}, source-only {extra[:5]}")
    for variable in target.weights:
        value = keras.ops.convert_to_numpy(by_path[variable.path])
        if value.shape != tuple(variable.shape):
            if not variable.path.endswith("positional_embedding"):
                raise ValueError(f"{variable.path}: shape {value.shape} != {tuple(variable.shape)}")
            value = resample_pos_embed(value.astype(np.float32), math.isqrt(variable.shape[0] - 1))
        variable.assign(keras.ops.cast(value, variable.dtype))
    return target


def resize_vit(vit: keras.Model, cfg, image_size: int) -> keras.Model:
    """A new ViT (guie_nb.model.vit) for `image_size` pixels with `vit`'s weights."""
    from guie_nb.model.vit import build_vit

    return carry_weights(vit, build_vit(replace(cfg, image_size=image_size), name=vit.name))


def resize_model_resolution(model: keras.Model, model_cfg, image_size: int):
    """Rebuilds the embedding model at `image_size` pixels, weights carried and the position
    embedding interpolated. Returns `(new_model, new_model_cfg)`; save the config with the weights."""
    from guie_nb.model.embedding import build_embedding_model

    new_cfg = replace(model_cfg, image_size=image_size)  # ModelConfig checks the patch geometry
    return carry_weights(model, build_embedding_model(new_cfg)), new_cfg
