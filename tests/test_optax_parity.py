"""The Optax optimizers reproduce the hand-written ones the recipes were tuned with.

`ReferenceOptimizer` is a frozen copy of `guie_nb.training.optim.Optimizer` as it was before
Optax replaced it (commit fe4bc61): AdamW with decoupled decay `lr * mult * wd * p` where masked,
Nesterov SGD with L2 decay added to the gradient before the momentum trace, global-norm clipping.
A few steps of each, with per-group multipliers, decay masks and clipping, must agree to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from guie_nb.training.optim import make_optimizer, warmup_cosine


def reference_warmup_cosine(step, peak: float, total_steps: int, warmup_steps: int, end_ratio: float):
    """Linear warm-up from 0 to `peak`, then cosine decay to `peak * end_ratio` at `total_steps`."""
    step = jnp.asarray(step, jnp.float32)
    warm = peak * (step + 1) / max(1, warmup_steps)
    progress = jnp.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
    cosine = peak * (end_ratio + (1 - end_ratio) * 0.5 * (1 + jnp.cos(math.pi * progress)))
    return jnp.where(step < warmup_steps, warm, cosine)


@dataclass(frozen=True)
class ReferenceOptimizer:
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
        return reference_warmup_cosine(step, self.peak_lr, self.total_steps, self.warmup_steps, self.end_ratio)

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


SHAPES = [(4, 3), (3,), (5, 2), (2,)]
GROUPS = ["block_0", "block_0", "top", "head"]
MULTIPLIERS = {"block_0": 0.25, "top": 0.5, "head": 1.0}
DECAY = [True, False, True, False]


def _params_and_grads(scale: float, steps: int = 5):
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.normal(size=s).astype("float32")) for s in SHAPES]
    grads = [[jnp.asarray(scale * rng.normal(size=s).astype("float32")) for s in SHAPES] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_optax_matches_the_reference(kind, clip):
    # gradient norms ~20: clipping (when on) acts at every step; the reference divides by norm + 1e-6,
    # Optax by the norm, a relative difference of 5e-8 here
    params, grads = _params_and_grads(scale=5.0)
    settings = dict(weight_decay=0.1, momentum=0.9, grad_clip_norm=clip)
    ref = ReferenceOptimizer(kind, 0.05, total_steps=10, warmup_steps=2, end_ratio=0.1,
                             lr_multipliers=tuple(MULTIPLIERS[g] for g in GROUPS), decay_mask=tuple(DECAY),
                             **settings)
    schedule = lambda s: warmup_cosine(s, 0.05, 10, 2, 0.1)  # noqa: E731
    tx = make_optimizer(kind, schedule, GROUPS, MULTIPLIERS, DECAY, **settings)

    ref_params, ref_state = list(params), ref.init(params)
    new_params, opt_state = list(params), tx.init(params)
    for step, g in enumerate(grads):
        ref_params, ref_state = ref.apply(ref_state, g, ref_params)
        updates, opt_state = tx.update(g, opt_state, new_params)
        new_params = optax.apply_updates(new_params, updates)
        for a, b in zip(new_params, ref_params):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=f"step {step}")
        assert float(schedule(step)) == float(ref.learning_rate(step))
    # the parameters moved (a comparison of two no-ops would pass too)
    assert all(not np.allclose(a, b) for a, b in zip(new_params, params))


def test_multipliers_and_decay_mask_act_per_parameter():
    p = [jnp.ones(3), jnp.ones(3)]
    g = [jnp.zeros(3), jnp.zeros(3)]
    tx = make_optimizer("sgd", lambda s: 0.1, ["a", "b"], {"a": 1.0, "b": 0.5}, [True, False],
                        weight_decay=0.2, momentum=0.0)
    updates, _ = tx.update(g, tx.init(p), p)
    # only the first decays: -lr * mult * wd * p
    np.testing.assert_allclose(np.asarray(updates[0]), -0.1 * 1.0 * 0.2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates[1]), 0.0)
    tx = make_optimizer("sgd", lambda s: 0.1, ["a", "b"], {"a": 1.0, "b": 0.5}, [False, False], momentum=0.0)
    updates, _ = tx.update([jnp.ones(3), jnp.ones(3)], tx.init(p), p)
    np.testing.assert_allclose(np.asarray(updates[1]), -0.05, rtol=1e-6)
    with pytest.raises(ValueError, match=r"no learning-rate multiplier for parameter group\(s\) \['b'\]"):
        make_optimizer("adamw", lambda s: 0.1, ["a", "b"], {"a": 1.0}, [True, True])
