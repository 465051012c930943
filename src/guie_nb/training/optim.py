"""The recipes' optimizers as Optax transforms: AdamW or Nesterov SGD, linear warm-up + cosine,
global-norm clipping, a learning-rate multiplier per parameter group and a weight-decay mask.

Keras optimizers carry one learning rate; the recipes need one per group (layer-wise decay, a
backbone multiplier). Frozen groups are not handed to the optimizer at all (no moments kept).

Semantics (the numbers the recipes were tuned with, before Optax; tests/test_optax_parity.py):
- AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019): Adam's bias-corrected
  step `m_hat / (sqrt(v_hat) + eps)` plus `weight_decay * p` where the mask is set, times
  `lr(step) * multiplier` (`optax.scale_by_adam` -> `optax.add_decayed_weights` -> learning rate).
- SGD: `weight_decay * p` added to the gradient (L2, coupled) before the momentum trace
  `mu = momentum * mu + g`, then the Nesterov step `g + momentum * mu` (`optax.add_decayed_weights`
  -> `optax.trace(nesterov=True)` -> learning rate).
- Clipping (`optax.clip_by_global_norm`) comes first, over the trained parameters' gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import jax.numpy as jnp
import optax

from guie_nb.training.config import TrainConfig


def warmup_cosine(step, peak: float, total_steps: int, warmup_steps: int, end_ratio: float):
    """Learning rate at `step` (0-based, the update about to be applied): linear warm-up
    `peak * (step + 1) / warmup_steps` for the first `warmup_steps` updates, then cosine decay from
    `peak` to `peak * end_ratio` at `total_steps` (Loshchilov & Hutter, SGDR, 2017, without restarts).

    The warm-up's `step + 1` makes the first update non-zero. Traceable (an Optax schedule).
    """
    step = jnp.asarray(step, jnp.float32)
    warm = peak * (step + 1) / max(1, warmup_steps)
    progress = jnp.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
    cosine = peak * (end_ratio + (1 - end_ratio) * 0.5 * (1 + jnp.cos(math.pi * progress)))
    return jnp.where(step < warmup_steps, warm, cosine)


def schedule_for(cfg: TrainConfig, steps_per_epoch: int) -> Callable:
    """`step -> learning rate` of a run: `cfg.learning_rate` peak, `cfg.warmup_epochs` of warm-up
    (at most all steps but one), cosine to `cfg.end_learning_rate_ratio` at the last step."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return partial(warmup_cosine, peak=cfg.learning_rate, total_steps=total, warmup_steps=warmup,
                   end_ratio=cfg.end_learning_rate_ratio)


def _scaled(schedule: Callable, multiplier: float) -> Callable:
    return lambda step: schedule(step) * multiplier


def make_optimizer(kind: str, schedule: Callable, groups: Sequence[str], multipliers: dict[str, float],
                   decay_mask: Sequence[bool], weight_decay: float = 0.0, momentum: float = 0.9,
                   grad_clip_norm: float | None = None, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
    """The transform for a list of trained parameters.

    `groups[i]`: parameter i's group name (`guie_nb.model.param_groups`); `multipliers`: the
    learning-rate multiplier of each group; `decay_mask[i]`: weight decay on parameter i?
    The update of parameter i is `-schedule(step) * multipliers[groups[i]] * direction`.
    """
    if kind not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {kind!r}; choose 'adamw' or 'sgd'")
    if len(groups) != len(decay_mask):
        raise ValueError(f"{len(groups)} group names for {len(decay_mask)} decay-mask entries")
    missing = sorted(set(groups) - set(multipliers))
    if missing:
        raise ValueError(f"no learning-rate multiplier for parameter group(s) {missing}")
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
    decay = [optax.add_decayed_weights(weight_decay, mask=list(decay_mask))] if weight_decay else []
    if kind == "adamw":
        parts += [optax.scale_by_adam(b1=beta1, b2=beta2, eps=eps), *decay]
    else:
        parts += [*decay, optax.trace(decay=momentum, nesterov=True)]
    # one learning rate per group: `lr * multiplier` as one scalar, as the recipes computed it
    rates = {g: optax.scale_by_learning_rate(_scaled(schedule, multipliers[g])) for g in sorted(set(groups))}
    parts.append(optax.multi_transform(rates, list(groups)))
    return optax.chain(*parts)


def optimizer_for(cfg: TrainConfig, steps_per_epoch: int, groups: Sequence[str], multipliers: dict[str, float],
                  decay_mask: Sequence[bool]) -> optax.GradientTransformation:
    """`make_optimizer` with a run's settings (`cfg.optimizer`, schedule, decay, momentum, clipping)."""
    return make_optimizer(cfg.optimizer, schedule_for(cfg, steps_per_epoch), groups, multipliers, decay_mask,
                          weight_decay=cfg.weight_decay, momentum=cfg.momentum, grad_clip_norm=cfg.grad_clip_norm)
