"""AdamW and Nesterov SGD as pure functions of JAX arrays, with a learning rate per parameter.

Keras optimizers carry one learning rate; the recipes need one per group (layer-wise decay,
a backbone multiplier, frozen parts). The state is a flat list of arrays, so a checkpoint is
just those arrays and resuming is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


import jax.numpy as jnp


def warmup_cosine(step, peak: float, total_steps: int, warmup_steps: int, end_ratio: float):
    """Linear warm-up from 0 to `peak`, then cosine decay to `peak * end_ratio` at `total_steps`."""
    step = jnp.asarray(step, jnp.float32)
    warm = peak * (step + 1) / max(1, warmup_steps)
    progress = jnp.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
    cosine = peak * (end_ratio + (1 - end_ratio) * 0.5 * (1 + jnp.cos(math.pi * progress)))
    return jnp.where(step < warmup_steps, warm, cosine)


@dataclass(frozen=True)
class Optimizer:
    kind: str  # adamw | sgd
    peak_lr: float
    total_steps: int
    warmup_steps: int
    end_ratio: float
    lr_multipliers: tuple[float, ...]  # one per trained variable
    decay_mask: tuple[bool, ...]  # weight decay on this variable?
    weight_decay: float = 0.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip_norm: float | None = None

    def init(self, params: list) -> list:
        """[step, then one (SGD) or two (AdamW) moment arrays per parameter]."""
        zeros = [jnp.zeros_like(p, dtype=jnp.float32) for p in params]
        moments = zeros if self.kind == "sgd" else zeros + [jnp.zeros_like(z) for z in zeros]
        return [jnp.zeros((), jnp.int32), *moments]

    def learning_rate(self, step):
        return warmup_cosine(step, self.peak_lr, self.total_steps, self.warmup_steps, self.end_ratio)

    def apply(self, state: list, grads: list, params: list) -> tuple[list, list]:
        step, n = state[0], len(params)
        grads = [g.astype(jnp.float32) for g in grads]
        if self.grad_clip_norm:
            norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads))
            grads = [g * jnp.minimum(1.0, self.grad_clip_norm / (norm + 1e-6)) for g in grads]
        lr = self.learning_rate(step)
        new_params, moments = [], []
        if self.kind == "sgd":
            for p, g, mu, mult, decay in zip(params, grads, state[1:], self.lr_multipliers, self.decay_mask):
                if decay and self.weight_decay:
                    g = g + self.weight_decay * p
                mu = self.momentum * mu + g
                update = g + self.momentum * mu  # Nesterov
                new_params.append((p - lr * mult * update).astype(p.dtype))
                moments.append(mu)
            return new_params, [step + 1, *moments]
        t = (step + 1).astype(jnp.float32)
        ms, vs = state[1:1 + n], state[1 + n:]
        new_m, new_v = [], []
        for p, g, m, v, mult, decay in zip(params, grads, ms, vs, self.lr_multipliers, self.decay_mask):
            m = self.beta1 * m + (1 - self.beta1) * g
            v = self.beta2 * v + (1 - self.beta2) * g * g
            update = (m / (1 - self.beta1**t)) / (jnp.sqrt(v / (1 - self.beta2**t)) + self.eps)
            if decay and self.weight_decay:
                update = update + self.weight_decay * p
            new_params.append((p - lr * mult * update).astype(p.dtype))
            new_m.append(m)
            new_v.append(v)
        return new_params, [step + 1, *new_m, *new_v]
