"""Test helpers: random open_clip towers with every parameter perturbed, and torch forwards.

open_clip's random init leaves biases at 0 and LayerNorm scales at 1, which would hide a swapped
or dropped bias in the conversion; `randomize` perturbs every parameter. Small towers are built
from a `VitConfig` with open_clip's own `_build_vision_tower` (the module `create_model` uses).
"""

from __future__ import annotations

import numpy as np


def open_clip_model(name: str, image_size: int | None = None, quick_gelu: bool = False, seed: int = 0):
    """A named open_clip CLIP model, random init (no download), every visual weight perturbed."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    kwargs = {"force_image_size": image_size} if image_size else {}
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)
    randomize(model.visual, seed)
    return model.eval()


def open_clip_tower(cfg, seed: int = 0):
    """open_clip's VisionTransformer for a guie_nb `VitConfig` (any size, e.g. demo-tiny)."""
    import torch
    from open_clip.model import _build_vision_tower

    torch.manual_seed(seed)
    vision_cfg = dict(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.width,
        layers=cfg.layers,
        head_width=cfg.width // cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
    )
    tower = _build_vision_tower(cfg.output_dim, vision_cfg, quick_gelu=cfg.quick_gelu)
    return randomize(tower, seed).eval()


def randomize(module, seed: int = 0, scale: float = 0.02):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


def torch_features(visual, images_nhwc: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return visual(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """CLIP-normalised-looking float32 NHWC images."""
    return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)
