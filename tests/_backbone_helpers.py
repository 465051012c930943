"""Test helpers: random open_clip towers with every parameter perturbed, and torch forwards.

open_clip's random init leaves biases at 0 and LayerNorm scales at 1, which would hide a swapped
or dropped bias in the conversion; `randomize` perturbs every parameter.
"""

from __future__ import annotations

import numpy as np


def open_clip_model(name: str, image_size: int | None = None, quick_gelu: bool = False, seed: int = 0):
    import open_clip
    import torch

    torch.manual_seed(seed)
    kwargs = {"force_image_size": image_size} if image_size else {}
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)
    return randomize(model.eval(), seed)


def randomize(model, seed: int = 0, scale: float = 0.02):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def torch_features(visual, images_nhwc: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return visual(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """CLIP-normalised-looking float32 NHWC images."""
    return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)
