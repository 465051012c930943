"""Which variables train, at what learning rate, with or without weight decay.

Groups are read from Keras variable paths (`resblocks_3/attn/in_proj/kernel`, `projection/...`,
`margin_head/centers`): the backbone is everything that is not the neck (`neck_bn`, `hidden`, `projection`, or `hidden_i`,
`projection_i` of neck branch i)
or the head (`margin_head`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guie_nb.training.config import TrainConfig

# neck: one branch (`hidden/`, `projection/`) or ModelConfig.neck_branches > 1 (`hidden_3/`, `projection_3/`)
NECK = ("neck_bn/", "hidden/", "projection/", "hidden_", "projection_")
HEAD = ("margin_head/",)
STEM = ("conv1/", "embeddings/", "ln_pre/")
NO_DECAY = ("gamma", "beta", "bias", "class_embedding", "positional_embedding", "centers")
_BLOCK = re.compile(r"(?:^|/)resblocks_(\d+)/")


@dataclass(frozen=True)
class Group:
    part: str  # stem | block | top | neck | head
    depth: int  # 0 stem, i + 1 for block i, num_blocks + 1 for ln_post/proj


def group_of(path: str, num_blocks: int) -> Group:
    if path.startswith(HEAD):
        return Group("head", num_blocks + 2)
    if path.startswith(NECK):
        return Group("neck", num_blocks + 2)
    m = _BLOCK.search(path)
    if m:
        return Group("block", int(m.group(1)) + 1)
    if path.startswith(STEM):
        return Group("stem", 0)
    return Group("top", num_blocks + 1)


def is_frozen(g: Group, cfg: TrainConfig) -> bool:
    if g.part == "head":
        return cfg.freeze_head
    if g.part == "neck":
        return False
    low = g.part in ("stem", "block") and cfg.frozen_blocks > 0 and g.depth <= cfg.frozen_blocks
    return cfg.freeze_backbone or low


def lr_multiplier(g: Group, cfg: TrainConfig, num_blocks: int) -> float:
    """1 for neck and head; backbone: multiplier x layer_decay^(distance from the top)."""
    if g.part in ("neck", "head"):
        return 1.0
    return cfg.backbone_lr_multiplier * cfg.layer_decay ** (num_blocks + 1 - g.depth)


def plan(paths: list[str], cfg: TrainConfig, num_blocks: int) -> tuple[list[bool], list[float], list[bool]]:
    """(trained?, lr multiplier, weight decay?) for each variable path."""
    groups = [group_of(p, num_blocks) for p in paths]
    trained = [not is_frozen(g, cfg) for g in groups]
    if not any(trained):
        raise ValueError("every variable is frozen: check freeze_backbone / freeze_head / frozen_blocks")
    mults = [lr_multiplier(g, cfg, num_blocks) for g in groups]
    decay = [not p.rsplit("/", 1)[-1].startswith(NO_DECAY) for p in paths]
    return trained, mults, decay
