"""A recipe's policy per parameter group: which groups train, at what learning-rate multiplier,
with or without weight decay. The groups themselves are the model's (`guie_nb.model.param_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

from guie_nb.model.param_groups import Group, decays, group_of
from guie_nb.training.config import TrainConfig


def is_frozen(g: Group, cfg: TrainConfig) -> bool:
    if g.part == "head":
        return cfg.freeze_head
    if g.part == "neck":
        return False
    low = g.part in ("stem", "block") and cfg.frozen_blocks > 0 and g.depth <= cfg.frozen_blocks
    return cfg.freeze_backbone or low


def lr_multiplier(g: Group, cfg: TrainConfig, num_blocks: int) -> float:
    """1 for neck and head; backbone: `backbone_lr_multiplier * layer_decay ** (distance from the top)`
    (layer-wise learning-rate decay, Clark et al., ELECTRA, 2020; BEiT, 2021)."""
    if g.part in ("neck", "head"):
        return 1.0
    return cfg.backbone_lr_multiplier * cfg.layer_decay ** (num_blocks + 1 - g.depth)


@dataclass(frozen=True)
class ParamPlan:
    """Per trainable variable (in the order of the paths given to `plan`)."""

    paths: list[str]
    groups: list[str]  # group name: stem, block_<i>, top, neck, head
    trained: list[bool]  # updated (True) or frozen
    multipliers: list[float]  # learning-rate multiplier
    decay: list[bool]  # weight decay?

    def of_trained(self) -> tuple[list[str], dict[str, float], list[bool]]:
        """(group of each trained variable, multiplier of each such group, decay mask): the optimizer's inputs."""
        keep = [i for i, t in enumerate(self.trained) if t]
        groups = [self.groups[i] for i in keep]
        return groups, {self.groups[i]: self.multipliers[i] for i in keep}, [self.decay[i] for i in keep]


def plan(paths: list[str], cfg: TrainConfig, num_blocks: int) -> ParamPlan:
    """The plan for the trainable variables at `paths` of a model with `num_blocks` transformer blocks.

    Raises ValueError when every variable is frozen, or (from `group_of`) for a path of no group.
    """
    groups = [group_of(p, num_blocks) for p in paths]
    trained = [not is_frozen(g, cfg) for g in groups]
    if not any(trained):
        raise ValueError("every variable is frozen: check freeze_backbone / freeze_head / frozen_blocks")
    return ParamPlan(list(paths), [g.name for g in groups], trained,
                     [lr_multiplier(g, cfg, num_blocks) for g in groups], [decays(p) for p in paths])
