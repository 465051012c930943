"""Does a weights source's architecture match the configured backbone? One comparison, two callers.

A weights source carries settings the weights were trained with; each is honoured (the configured
backbone has the same value) or refused with an error that names the setting, both values and the
fix. The loader (`guie_nb.model.weights.load_backbone_weights`, at training start) raises
`BackboneMismatch`; the notebooks' dry run (`guie_nb.model.weights_check.weights_problems`) lists
the same lines. Reading the settings is offline and cheap: open_clip's pretrained tables, small
JSON files, or tensor shapes.

Settings and where they come from:
- `quick_gelu`: open_clip's pretrained tag (`get_pretrained_cfg(...)["quick_gelu"]`, else the
  model config's), an `open_clip_config.json` beside the file, a KerasHub `config.json`'s
  `intermediate_activation`. A state dict alone does not say (not checked then).
- `image_size`, `patch_size` (and `width`, `layers`): open_clip's model config `vision_cfg`, the
  KerasHub `config.json`, or the state dict's shapes (`conv1.weight`, `positional_embedding`).
  `image_size` is compared with the backbone's native size: a `ModelConfig.image_size` override
  is a deliberate resolution change, honoured by resampling the position embeddings.
- `mean`, `std`: open_clip's pretrained cfg, `open_clip_config.json`'s `preprocess_cfg`, a
  KerasHub preset's image converter (`x * scale + offset`: std = 1 / (255 scale), mean =
  -offset std). guie_nb normalises with CLIP's (`guie_nb.model.preprocessing.CLIP_MEAN/STD`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from guie_nb.model.backbones import VIT_CONFIGS, VitConfig
from guie_nb.model.preprocessing import CLIP_MEAN, CLIP_STD

STAT_TOL = 1e-5  # mean/std as stored in the tables (8 digits) and recomputed from scale/offset


class BackboneMismatch(ValueError):
    """The weights were trained with settings the configured backbone does not have."""


@dataclass(frozen=True)
class SourceSettings:
    """What a weights source says it was trained with; None: the source does not say."""

    source: str  # for messages, e.g. "open_clip ViT-B-32/openai"
    quick_gelu: bool | None = None
    image_size: int | None = None
    patch_size: int | None = None
    width: int | None = None
    layers: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _tuple(v) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v)


def open_clip_settings(name: str, tag: str) -> SourceSettings:
    """From open_clip's own tables (`get_pretrained_cfg`, `get_model_config`): offline, no download.

    Raises ValueError when open_clip has no such pretrained tag for `name`."""
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {name}; known: {tags}")
    mcfg = open_clip.get_model_config(name) or {}
    vision = mcfg.get("vision_cfg", {})
    return SourceSettings(
        source=f"open_clip {name}/{tag}",
        quick_gelu=bool(pcfg.get("quick_gelu", mcfg.get("quick_gelu", False))),
        image_size=vision.get("image_size"), patch_size=vision.get("patch_size"),
        width=vision.get("width"), layers=vision.get("layers"),
        mean=_tuple(pcfg.get("mean")), std=_tuple(pcfg.get("std")),
    )


def open_clip_name(spec: str, backbone: str) -> tuple[str, str]:
    """`(open_clip model name, tag)` of `"<tag>"` or `"<name>/<tag>"`; a bare tag is looked up for
    the configured backbone as named (`ViT-H-14-quickgelu/dfn5b`), else without `-quickgelu`."""
    import open_clip

    name, _, tag = spec.rpartition("/")
    if name:
        return name, tag
    for candidate in (backbone, backbone.removesuffix("-quickgelu")):
        if candidate and open_clip.get_pretrained_cfg(candidate, tag):
            return candidate, tag
    return backbone.removesuffix("-quickgelu"), tag


def open_clip_config_settings(path: Path) -> SourceSettings | None:
    """From an `open_clip_config.json` (the HF hub's open_clip repos ship one beside the weights)."""
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    model, pre = body.get("model_cfg", {}), body.get("preprocess_cfg", {})
    vision = model.get("vision_cfg", {})
    return SourceSettings(
        source=str(path), quick_gelu=bool(model.get("quick_gelu", False)) if model else None,
        image_size=vision.get("image_size"), patch_size=vision.get("patch_size"),
        width=vision.get("width"), layers=vision.get("layers"),
        mean=_tuple(pre.get("mean")), std=_tuple(pre.get("std")),
    )


def _converter_stats(node) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """mean/std (0..1 units) of the first ImageConverter config under `node` (`x * scale + offset`)."""
    if isinstance(node, Mapping):
        if "ImageConverter" in str(node.get("class_name", "")) and "scale" in node.get("config", {}):
            cfg = node["config"]
            scale, offset = cfg["scale"], cfg.get("offset")
            if scale is None:
                return None
            scales = [float(s) for s in (scale if isinstance(scale, list) else [scale] * 3)]
            offsets = [float(o) for o in (offset if isinstance(offset, list) else [offset or 0.0] * 3)]
            std = tuple(1.0 / (255.0 * s) for s in scales)
            return tuple(-o * s for o, s in zip(offsets, std)), std
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _converter_stats(child)
        if found:
            return found
    return None


def keras_hub_settings(folder: Path) -> SourceSettings:
    """From a KerasHub CLIP preset folder: `config.json`, and the image converter in
    `preprocessor.json` / `image_converter.json` when the preset has one."""
    config = json.loads((folder / "config.json").read_text())
    body = config.get("config", {})
    vision = body.get("vision_encoder", {}).get("config") if "vision_encoder" in body else body
    vision = vision or {}
    stats = None
    for name in ("image_converter.json", "preprocessor.json"):
        if stats is None and (folder / name).is_file():
            stats = _converter_stats(json.loads((folder / name).read_text()))
    shape = vision.get("image_shape")
    return SourceSettings(
        source=f"KerasHub preset {folder}",
        quick_gelu=vision.get("intermediate_activation", "gelu") == "quick_gelu" if vision else None,
        image_size=int(shape[0]) if shape and shape[0] else None, patch_size=vision.get("patch_size"),
        width=vision.get("hidden_dim"), layers=vision.get("num_layers"),
        mean=stats[0] if stats else None, std=stats[1] if stats else None,
    )


def state_dict_settings(shapes: Mapping[str, tuple], source: str) -> SourceSettings:
    """From an open_clip state dict's shapes (`{key: shape}`; `visual.`/`module.` prefixes allowed)."""
    shapes = {k.removeprefix("module.").removeprefix("visual."): tuple(v) for k, v in shapes.items()}
    conv = shapes.get("conv1.weight")
    pos = shapes.get("positional_embedding")
    patch = conv[-1] if conv else None
    grid = math.isqrt(pos[0] - 1) if pos else None
    image = grid * patch if patch and grid and grid * grid == pos[0] - 1 else None
    return SourceSettings(source=source, patch_size=patch, image_size=image, width=conv[0] if conv else None)


def merge(first: SourceSettings | None, second: SourceSettings) -> SourceSettings:
    """`second`, with what it does not say taken from `first`."""
    if first is None:
        return second
    fields = {k: getattr(first, k) for k in second.__dataclass_fields__ if getattr(second, k) is None}
    return replace(second, **fields)


STATED = ("quick_gelu", "image_size", "patch_size", "width", "layers")


def _backbone_names(src: SourceSettings, cfg: VitConfig) -> list[str]:
    """Backbone names (`guie_nb.model.backbones`) with every setting `src` states: those equal to
    `cfg` in the rest first."""
    stated = {k: getattr(src, k) for k in STATED if getattr(src, k) is not None}
    wanted = replace(cfg, **stated)
    quick = stated.get("quick_gelu", cfg.quick_gelu)
    fits = [(c != replace(wanted, quick_gelu=False), name) for name, c in VIT_CONFIGS.items()
            if all(getattr(c, k) == v for k, v in stated.items() if k != "quick_gelu")]
    return [name + ("-quickgelu" if quick else "") for _, name in sorted(fits)]


def _fix(src: SourceSettings, cfg: VitConfig, setting: str) -> str:
    if setting in ("mean", "std"):
        return ("guie_nb normalises every backbone with CLIP's mean/std (guie_nb.model.preprocessing); "
                "weights trained with another normalisation are not supported: choose CLIP-normalised weights")
    names = _backbone_names(src, cfg)
    if names:
        return f"use backbone {names[0]!r}"
    return (f"no known backbone has {setting}={getattr(src, setting)} with the other settings these weights "
            "state: choose weights made for a known backbone (guie_nb.model.backbones)")


def settings_problems(src: SourceSettings, cfg: VitConfig) -> list[str]:
    """One line per setting where `src` and the configured backbone `cfg` (its native image size)
    differ: `"quick_gelu True != False (configured): open_clip ViT-B-32/openai was trained with
    quick_gelu=True; use backbone 'ViT-B-32-quickgelu'"`. Settings the source does not state pass."""
    checks = {k: getattr(cfg, k) for k in STATED}
    problems = [
        f"{k} {getattr(src, k)} != {want} (configured): {src.source} was trained with {k}={getattr(src, k)}; "
        + _fix(src, cfg, k)
        for k, want in checks.items() if getattr(src, k) is not None and getattr(src, k) != want
    ]
    for k, want in (("mean", CLIP_MEAN), ("std", CLIP_STD)):
        have = getattr(src, k)
        if have is not None and (len(have) != 3 or any(abs(a - b) > STAT_TOL for a, b in zip(have, want))):
            shown = tuple(round(v, 8) for v in have)
            problems.append(f"{k} {shown} != {want} (configured): {src.source} was trained with {k}={shown}; "
                            + _fix(src, cfg, k))
    return problems


def check_settings(src: SourceSettings, cfg: VitConfig) -> None:
    """Raises BackboneMismatch listing every `settings_problems` line; returns None when all agree."""
    problems = settings_problems(src, cfg)
    if problems:
        raise BackboneMismatch("backbone weights do not fit the configured backbone:\n  " + "\n  ".join(problems))
