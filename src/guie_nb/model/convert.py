"""open_clip ViT weights <-> the Keras backbone of `guie_nb.model.vit`, in both directions.

open_clip's `VisionTransformer` state dict (keys `conv1.weight`, `transformer.resblocks.{i}...`,
optionally prefixed `visual.`) maps one-to-one onto the Keras layers; only the layouts differ:
torch `Linear` stores `[out, in]` (Keras `Dense`: `[in, out]`), torch `Conv2d` `[out, in, kh, kw]`
(Keras: `[kh, kw, in, out]`). open_clip's `proj` is already `[in, out]` (it computes `x @ proj`).
No torch import here: values may be torch tensors, numpy arrays or anything `np.asarray` takes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from guie_nb.model.backbones import VitConfig

VISUAL_PREFIX = "visual."


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bf16 has no numpy dtype, so go via float32
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def visual_state_dict(source: Any) -> dict[str, np.ndarray]:
    """The visual tower's weights, `visual.` prefix removed, as float32 numpy arrays.

    `source`: an open_clip `CLIP` model, its `.visual` module, or a state dict of either
    (a full CLIP state dict keeps only its `visual.*` entries).
    """
    if hasattr(source, "state_dict") and not isinstance(source, Mapping):
        source = source.visual.state_dict() if hasattr(source, "visual") else source.state_dict()
    if not isinstance(source, Mapping):
        raise TypeError(f"expected an open_clip model or a state dict, got {type(source).__name__}")
    if "state_dict" in source and isinstance(source["state_dict"], Mapping):  # training checkpoints
        source = source["state_dict"]
    source = {k.removeprefix("module."): v for k, v in source.items()}
    if any(k.startswith(VISUAL_PREFIX) for k in source):
        source = {k[len(VISUAL_PREFIX):]: v for k, v in source.items() if k.startswith(VISUAL_PREFIX)}
    if "conv1.weight" not in source:
        raise ValueError(
            "not an open_clip ViT visual state dict: no 'conv1.weight' / 'visual.conv1.weight' key "
            f"(first keys: {sorted(source)[:5]})"
        )
    return {k: _to_numpy(v) for k, v in source.items()}


def vit_config_from_state_dict(source: Any, quick_gelu: bool = False, head_width: int = 64) -> VitConfig:
    """Infers the ViT shape from the weights. Heads are not stored; open_clip's default head width
    is 64 (ViT-H-14 uses 80, ViT-g-14 88: pass `head_width` or use the named config)."""
    sd = visual_state_dict(source)
    width, _, patch, _ = sd["conv1.weight"].shape
    grid = math.isqrt(sd["positional_embedding"].shape[0] - 1)
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    mlp_width = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return VitConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=len(blocks),
        heads=width // head_width,
        mlp_ratio=mlp_width / width,
        output_dim=sd["proj"].shape[1] if "proj" in sd and sd["proj"] is not None else None,
        quick_gelu=quick_gelu,
    )


def _visual_model(model: keras.Model) -> keras.Model:
    """The ViT itself, given the ViT or a model that contains it as the layer `visual`."""
    names = {layer.name for layer in model.layers}
    if "conv1" in names:
        return model
    if "visual" in names:
        return model.get_layer("visual")
    raise ValueError(f"{model.name!r} is neither a guie_nb ViT nor a model with a 'visual' ViT layer")


def _block_names(vit: keras.Model) -> list[str]:
    names = [layer.name for layer in vit.layers if layer.name.startswith("resblocks_")]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def _pairs(vit: keras.Model) -> list[tuple[str, keras.Variable, str]]:
    """(open_clip key, Keras variable, layout) for every weight; layout says how to transpose."""
    g = vit.get_layer
    emb = g("embeddings")
    pairs = [
        ("conv1.weight", g("conv1").kernel, "conv"),
        ("class_embedding", emb.class_embedding, "same"),
        ("positional_embedding", emb.positional_embedding, "same"),
        ("ln_pre.weight", g("ln_pre").gamma, "same"),
        ("ln_pre.bias", g("ln_pre").beta, "same"),
    ]
    for i, name in enumerate(_block_names(vit)):
        block, p = g(name), f"transformer.resblocks.{i}."
        pairs += [
            (p + "ln_1.weight", block.ln_1.gamma, "same"),
            (p + "ln_1.bias", block.ln_1.beta, "same"),
            (p + "attn.in_proj_weight", block.attn.in_proj.kernel, "linear"),
            (p + "attn.in_proj_bias", block.attn.in_proj.bias, "same"),
            (p + "attn.out_proj.weight", block.attn.out_proj.kernel, "linear"),
            (p + "attn.out_proj.bias", block.attn.out_proj.bias, "same"),
            (p + "ln_2.weight", block.ln_2.gamma, "same"),
            (p + "ln_2.bias", block.ln_2.beta, "same"),
            (p + "mlp.c_fc.weight", block.c_fc.kernel, "linear"),
            (p + "mlp.c_fc.bias", block.c_fc.bias, "same"),
            (p + "mlp.c_proj.weight", block.c_proj.kernel, "linear"),
            (p + "mlp.c_proj.bias", block.c_proj.bias, "same"),
        ]
    pairs += [("ln_post.weight", g("ln_post").gamma, "same"), ("ln_post.bias", g("ln_post").beta, "same")]
    if "proj" in {layer.name for layer in vit.layers}:
        pairs.append(("proj", g("proj").kernel, "same"))
    return pairs


def _torch_to_keras(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv":
        return value.transpose(2, 3, 1, 0)
    if layout == "linear":
        return value.T
    return value


def _keras_to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv":
        return value.transpose(3, 2, 0, 1)
    if layout == "linear":
        return value.T
    return value


def open_clip_to_keras(source: Any, keras_backbone: keras.Model, resize_pos_embed: bool = True) -> keras.Model:
    """Copies open_clip ViT weights into `keras_backbone` (the ViT or an embedding model holding it).

    A positional embedding for another grid is resampled like open_clip's `resize_pos_embed`
    (bicubic, class token kept) when `resize_pos_embed`; any other shape mismatch is an error.
    Returns `keras_backbone`.
    """
    from guie_nb.model.posemb import resample_pos_embed  # posemb imports this module's helpers

    sd = visual_state_dict(source)
    vit = _visual_model(keras_backbone)
    pairs = _pairs(vit)
    unsupported = sorted(set(sd) - {key for key, _, _ in pairs})
    if unsupported:
        raise ValueError(
            f"the open_clip weights have parameters this ViT does not (e.g. attention pooling, "
            f"layer scale, or more blocks): {unsupported[:8]}"
        )
    for key, variable, layout in pairs:
        if key not in sd:
            raise ValueError(f"open_clip weights miss {key!r} needed by Keras variable {variable.path!r}")
        value = _torch_to_keras(sd[key], layout)
        if key == "positional_embedding" and value.shape != tuple(variable.shape) and resize_pos_embed:
            value = resample_pos_embed(value, math.isqrt(variable.shape[0] - 1))
        if value.shape != tuple(variable.shape):
            raise ValueError(
                f"{key}: open_clip shape {sd[key].shape} -> {value.shape} does not fit Keras "
                f"{variable.path} {tuple(variable.shape)}; the backbone config differs from the weights"
            )
        variable.assign(keras.ops.cast(value, variable.dtype))
    return keras_backbone


def keras_to_open_clip_state_dict(keras_backbone: keras.Model, prefix: str = "") -> dict[str, np.ndarray]:
    """The Keras ViT's weights under open_clip's key names (float32 numpy, torch layouts).

    `prefix=""` gives `VisionTransformer.load_state_dict` keys; `prefix="visual."` gives the keys
    of a full CLIP model (load with `strict=False`, the text tower is not part of it).
    """
    vit = _visual_model(keras_backbone)
    return {
        prefix + key: np.ascontiguousarray(_keras_to_torch(keras.ops.convert_to_numpy(v).astype(np.float32), layout))
        for key, v, layout in _pairs(vit)
    }
