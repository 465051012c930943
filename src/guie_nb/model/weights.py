"""Backbone weights, one notebook parameter away.

`backbone_weights` names where the pretrained ViT comes from:
- `""` / `"none"`: random init (the demo);
- `"open_clip:laion2b_s32b_b79k"` (tag for the configured backbone) or
  `"open_clip:ViT-H-14/laion2b_s32b_b79k"`: open_clip's download (Hugging Face hub; needs torch
  and internet, or the file already in the HF cache);
- `"kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3"`: the KerasHub preset as a Kaggle
  Model, read from the notebook's attached input (`model_sources`) or fetched by kagglehub;
- a local path: an open_clip `.bin`/`.pt`/`.pth` (torch) or `.safetensors` file (no torch needed),
  a folder holding one (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`), or a
  KerasHub preset folder (`config.json` + `model.weights.h5`).
Nothing is retried: without the file and without internet the error comes at once and says
which alternatives exist.

Before any weight is read (and for `open_clip:` before any download), the settings the source
states (QuickGELU, image and patch size, width, layers, mean/std) are compared with the configured
backbone by `guie_nb.model.fidelity`; a difference raises `BackboneMismatch` naming the fix.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import keras

from guie_nb.model.backbones import VitConfig, vit_config
from guie_nb.model.convert import _visual_model, keras_hub_to_keras, open_clip_to_keras
from guie_nb.model.fidelity import BackboneMismatch, check_settings, open_clip_name, open_clip_settings

OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pt")
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
HINT = (
    "Attach the Kaggle Model keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k (model_sources) and "
    "pass its folder or 'kaggle:<handle>', pass a local open_clip .bin/.safetensors file, or set "
    "backbone_weights='none' for random init."
)


class WeightsUnavailable(RuntimeError):
    """The requested weights are neither on disk nor reachable."""


def _offline_reason(host: str) -> str | None:
    """Why `host` cannot be reached (None when it can); one 3 s attempt, no retries."""
    for var in ("HF_HUB_OFFLINE", "GUIE_OFFLINE", "KAGGLEHUB_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return f"{var} is set"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        return f"{host} is unreachable ({err})"
    return None


def _require_online(host: str, what: str) -> None:
    reason = _offline_reason(host)
    if reason:
        raise WeightsUnavailable(f"cannot fetch {what}: {reason}. {HINT}")


def load_state_dict_file(path: str | Path) -> dict:
    """An open_clip checkpoint file as a state dict (safetensors needs no torch)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist. {HINT}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix in TORCH_SUFFIXES:
        import torch

        return torch.load(str(path), map_location="cpu", weights_only=True)
    raise ValueError(f"unsupported weights file {path.name}: use .safetensors, .bin, .pt or .pth")


def _refuse(problems: list[str], what: str) -> None:
    if problems:
        raise BackboneMismatch(f"backbone weights {what} do not fit the configured backbone:\n  "
                               + "\n  ".join(problems))


def _load_file(model: keras.Model, path: Path, cfg: VitConfig) -> keras.Model:
    from guie_nb.model.weights_check import open_clip_file_problems

    sd = load_state_dict_file(path)
    shapes = {k: tuple(v.shape) for k, v in sd.get("state_dict", sd).items() if hasattr(v, "shape")}
    _refuse(open_clip_file_problems(shapes, path, cfg), str(path))
    return open_clip_to_keras(sd, model)


def _load_dir(model: keras.Model, folder: Path, cfg: VitConfig) -> keras.Model:
    # a large preset is saved sharded: model.weights.json + model_*.weights.h5 (keras-hub reads both)
    if (folder / "config.json").is_file() and any((folder / n).is_file() for n in ("model.weights.h5",
                                                                                    "model.weights.json")):
        import keras_hub

        from guie_nb.model.weights_check import keras_hub_folder_problems

        _refuse(keras_hub_folder_problems(folder, cfg), str(folder))
        return keras_hub_to_keras(keras_hub.models.CLIPBackbone.from_preset(str(folder)), model)
    for name in OPEN_CLIP_FILES:
        if (folder / name).is_file():
            return _load_file(model, folder / name, cfg)
    raise WeightsUnavailable(f"{folder} holds neither a KerasHub preset nor one of {OPEN_CLIP_FILES}. {HINT}")


def _kaggle_attached(handle: str) -> Path | None:
    """Where Kaggle mounts an attached model `owner/model/framework/variation/version`."""
    from guie_nb.kaggle.paths import KaggleRoots  # lazy: only the kaggle: path needs it

    inputs = Path(KaggleRoots.from_env().input)
    parts = handle.strip("/").split("/")
    for candidate in (inputs.joinpath(*parts[1:]), inputs.joinpath(*parts)):
        if candidate.is_dir():
            return candidate
    return None


def _load_kaggle(model: keras.Model, handle: str, cfg: VitConfig) -> keras.Model:
    folder = _kaggle_attached(handle)
    if folder is None:
        _require_online("www.kaggle.com", f"Kaggle Model {handle}")
        import kagglehub

        folder = Path(kagglehub.model_download(handle))
    return _load_dir(model, folder, cfg)


def _load_open_clip(model: keras.Model, spec: str, backbone: str, cfg: VitConfig) -> keras.Model:
    import open_clip
    from huggingface_hub import hf_hub_download

    name, tag = open_clip_name(spec, backbone)
    check_settings(open_clip_settings(name, tag), cfg)  # open_clip's tables: before any download
    pretrained = open_clip.get_pretrained_cfg(name, tag)
    repo = pretrained.get("hf_hub", "").strip("/")
    if repo:  # the HF cache first, offline and instantly
        for filename in OPEN_CLIP_FILES:
            try:
                path = hf_hub_download(repo, filename, local_files_only=True)
            except Exception:  # noqa: BLE001 - not cached (the hub raises several kinds)
                continue
            return open_clip_to_keras(load_state_dict_file(path), model)
    _require_online("huggingface.co", f"open_clip {name}/{tag}")
    path = open_clip.pretrained.download_pretrained(pretrained)
    return open_clip_to_keras(load_state_dict_file(path), model)


def configured_vit(model: keras.Model, backbone: str = "") -> VitConfig:
    """The configuration weights are checked against: the named backbone's (native image size), or
    without a name the shape of `model`'s ViT itself (heads and MLP ratio as built)."""
    if backbone:
        return vit_config(backbone)
    vit = _visual_model(model)
    conv1 = vit.get_layer("conv1")
    patch, _, _, width = conv1.kernel.shape
    stride = int(conv1.strides[0])
    rows = vit.get_layer("embeddings").positional_embedding.shape[0]
    blocks = [layer for layer in vit.layers if layer.name.startswith("resblocks_")]
    names = {layer.name for layer in vit.layers}
    return VitConfig(image_size=(math.isqrt(rows - 1) - 1) * stride + patch, patch_size=patch,
                     patch_stride=None if stride == patch else stride, width=width, layers=len(blocks),
                     heads=blocks[0].attn.heads,
                     mlp_ratio=blocks[0].c_fc.kernel.shape[1] / width,
                     output_dim=vit.get_layer("proj").kernel.shape[1] if "proj" in names else None,
                     quick_gelu=bool(blocks[0].quick_gelu))


def load_backbone_weights(model: keras.Model, spec: str | None, backbone: str = "") -> keras.Model:
    """Loads `spec` (see the module doc) into `model` (the ViT or an embedding model holding it).

    `backbone`: the configured backbone name; used by `open_clip:<tag>`, and its native config
    (`configured_vit`) is what the weights' settings must match. Returns `model`.
    Raises BackboneMismatch when the source states a setting the backbone does not have
    (e.g. open_clip's `openai` weights are QuickGELU: use backbone 'ViT-B-32-quickgelu'),
    WeightsUnavailable when the weights cannot be found or fetched.
    """
    spec = (spec or "").strip()
    if spec.lower() in ("", "none", "random"):
        return model
    cfg = configured_vit(model, backbone)
    if spec.startswith("open_clip:"):
        return _load_open_clip(model, spec[len("open_clip:"):], backbone, cfg)
    if spec.startswith("kaggle:"):
        return _load_kaggle(model, spec[len("kaggle:"):], cfg)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_dir(model, path, cfg)
    if path.suffix in (".safetensors", *TORCH_SUFFIXES):
        return _load_file(model, path, cfg)
    raise WeightsUnavailable(f"backbone_weights={spec!r}: no such file or folder, and not open_clip:/kaggle:. {HINT}")


def _hf_cached(spec: str, backbone: str) -> str | None:
    try:
        import open_clip
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    cfg = open_clip.get_pretrained_cfg(*open_clip_name(spec, backbone)) or {}
    for filename in OPEN_CLIP_FILES:
        try:
            return hf_hub_download(cfg.get("hf_hub", "").strip("/"), filename, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached, or no hub repo
            continue
    return None


def locate_weights(spec: str | None, backbone: str = "") -> dict:
    """Where `backbone_weights` will be read from, without loading anything.

    Returns `{"spec", "source": "none" | "kaggle_model" | "open_clip" | "file" | "folder",
    "path": str | None, "found": bool}`, plus `"open_clip": [name, tag]` for an `open_clip:` spec
    (`backbone` names the model of a bare tag); for a `kaggle:` handle, `path` is the attached model's
    mount (`<input>/<model>/<framework>/<variation>/<version>`) whether or not it is there.
    """
    from guie_nb.kaggle.inputs import model_mount
    from guie_nb.kaggle.paths import KaggleRoots

    spec = (spec or "").strip()
    out = {"spec": spec, "source": "none", "path": None, "found": True}
    if spec.lower() in ("", "none", "random"):
        return out
    if spec.startswith("kaggle:"):
        handle = spec[len("kaggle:"):].strip("/")
        found = _kaggle_attached(handle)
        path = found or model_mount(handle, KaggleRoots.from_env().input)
        return {**out, "source": "kaggle_model", "path": str(path), "found": found is not None}
    if spec.startswith("open_clip:"):
        cached = _hf_cached(spec[len("open_clip:"):], backbone)
        try:
            name_tag = list(open_clip_name(spec[len("open_clip:"):], backbone))
        except ImportError:
            name_tag = None
        return {**out, "source": "open_clip", "path": cached, "found": cached is not None, "open_clip": name_tag}
    path = Path(spec).expanduser().resolve()
    return {**out, "source": "folder" if path.is_dir() else "file", "path": str(path), "found": path.exists()}


def load_pretrained_backbones(embedding_model: keras.Model, cfg) -> keras.Model:
    """Every backbone of an embedding model built from `cfg` (`ModelConfig`): `backbone_weights`
    into `visual`, each of `extra_backbones`' weights into `visual_1`, `visual_2`, ... Errors as
    `load_backbone_weights`."""
    load_backbone_weights(embedding_model, cfg.backbone_weights, cfg.backbone)
    for i, extra in enumerate(cfg.extra_backbones, 1):
        load_backbone_weights(embedding_model.get_layer(f"visual_{i}"), extra["backbone_weights"], extra["backbone"])
    return embedding_model
