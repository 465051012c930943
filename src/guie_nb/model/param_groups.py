"""The model's parameter groups, named next to the model definition (`guie_nb.model.embedding`,
`guie_nb.model.vit`): which part of the network each trainable variable belongs to.

Training recipes set a learning rate, a weight decay and freezing per group
(`guie_nb.training.param_groups`); the groups follow the network from input to output:

| group     | variables (Keras paths)                                   | depth |
|-----------|-----------------------------------------------------------|-------|
| `stem`    | `conv1/`, `embeddings/` (class + position), `ln_pre/`     | 0     |
| `block_i` | `resblocks_<i>/` (transformer block i)                    | i + 1 |
| `top`     | `ln_post/`, `proj/` (the CLIP projection)                 | L + 1 |
| `neck`    | `NECK_LAYERS`: `neck_bn/`, `hidden/`, `projection/`, `hidden_<i>/`, `projection_<i>/` | L + 2 |
| `head`    | `margin_head/` (class centres)                            | L + 2 |

A layer added to the embedding model must be named here (a new neck layer: add its name, or its
name pattern, to `NECK_LAYERS`); a variable that matches no group raises instead of silently
training with some other group's learning rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEM_LAYERS = ("conv1", "embeddings", "ln_pre")
TOP_LAYERS = ("ln_post", "proj")
# the embedding neck after the backbone (guie_nb.model.embedding): the optional `neck_bn` BatchNorm
# (ModelConfig.neck_batchnorm), `hidden` and `projection` Dense layers, and branch i's `hidden_<i>` /
# `projection_<i>` of a multi-branch neck (ModelConfig.neck_branches)
NECK_LAYERS = ("neck_bn", "hidden", "projection", r"hidden_\d+", r"projection_\d+")
HEAD_LAYERS = ("margin_head",)
# variables without weight decay: norms' scales and offsets, biases, embeddings, class centres
NO_DECAY = ("gamma", "beta", "bias", "class_embedding", "positional_embedding", "centers")

_BLOCK = re.compile(r"^resblocks_(\d+)/")


def _layer_pattern(names: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"^(?:" + "|".join(names) + r")/")


_STEM, _TOP, _NECK, _HEAD = (_layer_pattern(n) for n in (STEM_LAYERS, TOP_LAYERS, NECK_LAYERS, HEAD_LAYERS))


@dataclass(frozen=True)
class Group:
    part: str  # stem | block | top | neck | head
    depth: int  # 0 stem, i + 1 for block i, num_blocks + 1 top, num_blocks + 2 neck and head

    @property
    def name(self) -> str:
        """`stem`, `block_<i>`, `top`, `neck` or `head`."""
        return f"block_{self.depth - 1}" if self.part == "block" else self.part


def group_of(path: str, num_blocks: int) -> Group:
    """The group of the variable at Keras path `path` (e.g. `resblocks_3/attn/in_proj/kernel`) in
    a model whose backbone has `num_blocks` transformer blocks.

    Raises ValueError for a path of no group, or a block index outside `[0, num_blocks)`.
    """
    if _HEAD.match(path):
        return Group("head", num_blocks + 2)
    if _NECK.match(path):
        return Group("neck", num_blocks + 2)
    if m := _BLOCK.match(path):
        i = int(m.group(1))
        if i >= num_blocks:
            raise ValueError(f"variable {path!r} is in block {i}, but the backbone has {num_blocks} blocks")
        return Group("block", i + 1)
    if _STEM.match(path):
        return Group("stem", 0)
    if _TOP.match(path):
        return Group("top", num_blocks + 1)
    raise ValueError(
        f"variable {path!r} belongs to no parameter group; name its layer in guie_nb.model.param_groups "
        f"(stem {STEM_LAYERS}, blocks resblocks_<i>, top {TOP_LAYERS}, neck {NECK_LAYERS}, head {HEAD_LAYERS})")


def decays(path: str) -> bool:
    """Whether weight decay applies to the variable at `path` (not to scales, biases, embeddings, centres)."""
    return not path.rsplit("/", 1)[-1].startswith(NO_DECAY)
