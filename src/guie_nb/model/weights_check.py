"""Does a weights file fit the configured backbone? Checked from shapes alone, without loading.

A ViT-H-14 checkpoint is 2.5-4 GB: the dry run reads only what describes it, a KerasHub preset's
`config.json` and the HDF5 dataset shapes of `model.weights.h5` (or of the shards listed in
`model.weights.json`), or an open_clip file's tensor shapes (a `.safetensors` header; a torch file
through a memory map). Each mismatch is reported by name (`patch_size 16 != 14`). The settings a
source states (QuickGELU, image and patch size, mean/std) are compared by `guie_nb.model.fidelity`,
the same comparison the loader makes at training start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from guie_nb.model.backbones import VitConfig
from guie_nb.model.fidelity import (
    keras_hub_settings,
    merge,
    open_clip_config_settings,
    open_clip_settings,
    settings_problems,
    state_dict_settings,
)
from guie_nb.model.weights import OPEN_CLIP_FILES, TORCH_SUFFIXES

VISION = "layers/clip_vision_encoder/layers/"


def _diff(what: dict[str, tuple]) -> list[str]:
    return [f"{name} {have} != {want} (configured)" for name, (have, want) in what.items() if have != want]


def keras_hub_config_problems(config: dict, cfg: VitConfig) -> list[str]:
    """A KerasHub CLIPBackbone (or CLIPVisionEncoder) `config.json` against `cfg`: the shape
    settings `guie_nb.model.fidelity` does not cover (heads, MLP width, projection)."""
    body = config.get("config", {})
    vision = body.get("vision_encoder", {}).get("config") if "vision_encoder" in body else body
    if not vision or "hidden_dim" not in vision:
        return [f"config.json is not a KerasHub CLIP config (class {config.get('class_name')!r})"]
    checks = {
        "heads": (vision.get("num_heads"), cfg.heads),
        "mlp_width": (vision.get("intermediate_dim"), cfg.mlp_width),
    }
    if cfg.output_dim is not None and "projection_dim" in body:
        checks["output_dim"] = (body["projection_dim"], cfg.output_dim)
    return _diff(checks)


def keras_hub_folder_problems(folder: Path, cfg: VitConfig) -> list[str]:
    """A KerasHub preset folder's small JSON files against `cfg` (the loader and the dry run)."""
    config = json.loads((folder / "config.json").read_text())
    return settings_problems(keras_hub_settings(folder), cfg) + keras_hub_config_problems(config, cfg)


def open_clip_file_problems(shapes: dict[str, tuple], path: Path, cfg: VitConfig) -> list[str]:
    """An open_clip weights file (its tensor shapes, and the `open_clip_config.json` beside it if
    any) against `cfg` (the loader and the dry run)."""
    settings = merge(open_clip_config_settings(path.parent / "open_clip_config.json"),
                     state_dict_settings(shapes, str(path)))
    return settings_problems(settings, cfg) + open_clip_shape_problems(shapes, cfg)


def _h5_shapes(paths: list[Path]) -> dict[str, tuple]:
    import h5py

    shapes: dict[str, tuple] = {}
    for path in paths:
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: shapes.__setitem__(n, tuple(o.shape)) if isinstance(o, h5py.Dataset) else None)
    return shapes


def keras_hub_weight_files(folder: Path) -> list[Path]:
    """`model.weights.h5`, or the shards a sharded preset's `model.weights.json` lists."""
    single, index = folder / "model.weights.h5", folder / "model.weights.json"
    if single.is_file():
        return [single]
    if index.is_file():
        listed = json.loads(index.read_text())
        names = sorted({v for v in _strings(listed) if v.endswith(".weights.h5")})
        missing = [n for n in names if not (folder / n).is_file()]
        if missing or not names:
            raise FileNotFoundError(f"{index} lists shards that are not there: {missing or 'none listed'}")
        return [folder / n for n in names]
    raise FileNotFoundError(f"{folder} has config.json but neither model.weights.h5 nor model.weights.json")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def keras_hub_shape_problems(shapes: dict[str, tuple], cfg: VitConfig) -> list[str]:
    """HDF5 dataset shapes of a KerasHub CLIP preset against `cfg` (the vision tower)."""
    emb = VISION + "clip_vision_embedding/"
    want = {
        emb + "patch_embedding/vars/0": (cfg.patch_size, cfg.patch_size, 3, cfg.width),
        emb + "position_embedding/vars/0": (cfg.grid_size**2 + 1, cfg.width),
    }
    blocks = sorted({m.group(1) for k in shapes if (m := re.match(re.escape(VISION) + r"(clip_encoder_layer(_\d+)?)/", k))})
    problems = [f"weights: {k} {shapes.get(k, 'missing')} != {v} (configured)" for k, v in want.items()
                if shapes.get(k) != v]
    if len(blocks) != cfg.layers:
        problems.append(f"weights: {len(blocks)} vision blocks != {cfg.layers} (configured)")
    for b in blocks:
        fc = shapes.get(f"{VISION}{b}/dense_1/vars/0")
        if fc != (cfg.width, cfg.mlp_width):
            problems.append(f"weights: {b}/dense_1 {fc} != {(cfg.width, cfg.mlp_width)} (configured)")
            break
    return problems


def open_clip_shapes(path: Path) -> dict[str, tuple]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd)
    return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


def open_clip_shape_problems(shapes: dict[str, tuple], cfg: VitConfig) -> list[str]:
    shapes = {k.removeprefix("module.").removeprefix("visual."): v for k, v in shapes.items()}
    if "conv1.weight" not in shapes:
        return ["weights: not an open_clip ViT state dict (no conv1.weight)"]
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    # patch size, width and the position grid are settings (guie_nb.model.fidelity)
    checks = {
        "blocks": (len(blocks), cfg.layers),
        "mlp.c_fc.weight": (shapes.get("transformer.resblocks.0.mlp.c_fc.weight"), (cfg.mlp_width, cfg.width)),
    }
    if cfg.output_dim is not None:
        checks["proj"] = (shapes.get("proj"), (cfg.width, cfg.output_dim))
    return [f"weights: {p}" for p in _diff(checks)]


def open_clip_tag_problems(location: dict, cfg: VitConfig) -> list[str]:
    """An `open_clip:` location's tag (open_clip's pretrained tables, offline) against `cfg`;
    [] for other sources."""
    if not location.get("open_clip"):
        return []
    try:
        return settings_problems(open_clip_settings(*location["open_clip"]), cfg)
    except ValueError as err:
        return [str(err)]


def weights_problems(location: dict, cfg: VitConfig) -> list[str]:
    """Problems with the weights `guie_nb.model.weights.locate_weights` found, for backbone `cfg`
    (its native image size: an `image_size` override is honoured by resampling positions).

    An `open_clip:` spec is checked against open_clip's pretrained tables even when the file is
    not downloaded yet (the tables ship with open_clip)."""
    if location["source"] == "none":
        return []
    problems = open_clip_tag_problems(location, cfg)
    if not location["found"]:
        return problems + [f"backbone weights {location['spec']!r} not found"
                           + (f" at {location['path']}" if location["path"] else "")]
    path = Path(location["path"])
    try:
        if path.is_dir() and (path / "config.json").is_file():
            return (problems + keras_hub_folder_problems(path, cfg)
                    + keras_hub_shape_problems(_h5_shapes(keras_hub_weight_files(path)), cfg))
        if path.is_dir():
            files = [path / n for n in OPEN_CLIP_FILES if (path / n).is_file()]
            if not files:
                return [f"{path} holds neither a KerasHub preset (config.json) nor one of {OPEN_CLIP_FILES}"]
            path = files[0]
        if path.suffix not in (".safetensors", *TORCH_SUFFIXES):
            return [f"unsupported weights file {path.name}: use .safetensors, .bin, .pt or .pth"]
        return problems + open_clip_file_problems(open_clip_shapes(path), path, cfg)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        return problems + [f"weights at {path} unreadable: {err}"]
