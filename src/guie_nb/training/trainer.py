"""The training loop: data -> model -> jitted multi-step train function -> validation -> outputs.

Keras 3 on the JAX backend (Kaggle's TPU v5e-8 runs JAX; the same code runs on GPU and CPU).
The model is Keras; the step is `model.stateless_call` + `jax.value_and_grad` + our optimizer,
scanned over `steps_per_execution` batches in one compiled call. Batches are sharded over the
devices by a `keras.distribution` (data parallel by default).

Resumable: a checkpoint (all variables, optimizer state, step, epoch-so-far sums) is written every
`checkpoint_every` steps and at every epoch end; a rerun with the same configuration continues
from the newest one and, because the data stream is a function of (seed, epoch, position), ends
with the same weights as an uninterrupted run.

Outputs in `out_dir`: `model_config.json`, `train_config.json`, `training_model.weights.h5`
(embedding + head, for fine-tuning), `embedding.weights.h5` (for export), `history.csv`,
`metrics.json` and `checkpoints/`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from guie_nb.data.pipeline import class_counts, train_dataset
from guie_nb.data.prepare import DataDirs, load_manifest, train_paths
from guie_nb.evaluation import ValidationSet, evaluate_keras
from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model
from guie_nb.model.weights import load_backbone_weights
from guie_nb.model.margin_heads import margins_for_epoch
from guie_nb.model.sharding import make_distribution
from guie_nb.training import checkpoint, param_groups
from guie_nb.training.config import TrainConfig
from guie_nb.training.optim import Optimizer
from guie_nb.training.progress import EpochProgress
from guie_nb.training.transfer import TRAINING_WEIGHTS, load_training_weights

EMBEDDING_WEIGHTS = "embedding.weights.h5"


def distribution_for(cfg: TrainConfig, devices=None):
    """The one place that picks how the run is spread over the devices (guie_nb.model.sharding).

    `devices`: the mesh's devices (default: all local ones; `xla_memory` passes a TPU topology's).
    """
    dist = make_distribution(cfg.layout, devices=devices, model_parallel=cfg.model_parallel)
    replicas = dist.device_mesh.shape[dist.device_mesh.axis_names.index(dist.batch_dim_name)]
    if cfg.batch_size % replicas:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {replicas} data-parallel replicas; "
                         f"use a multiple of {replicas}")
    micro = cfg.batch_size // cfg.grad_accum_steps
    if micro % replicas:
        raise ValueError(f"the micro-batch ({cfg.batch_size} / grad_accum_steps {cfg.grad_accum_steps} = {micro}) "
                         f"does not split over {replicas} data-parallel replicas; use a batch_size that is a "
                         f"multiple of {replicas * cfg.grad_accum_steps}, or fewer grad_accum_steps")
    return dist


@contextlib.contextmanager
def dtype_policy(name: str):
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def steps_per_epoch(cfg: TrainConfig, train_images: int) -> int:
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    spe = cfg.steps_per_execution
    return max(spe, train_images // cfg.batch_size // spe * spe)


def build_optimizer(cfg: TrainConfig, steps: int, multipliers: list[float], decay: list[bool]) -> Optimizer:
    total = cfg.epochs * steps
    return Optimizer(
        kind=cfg.optimizer, peak_lr=cfg.learning_rate, total_steps=total,
        warmup_steps=min(int(round(cfg.warmup_epochs * steps)), total - 1), end_ratio=cfg.end_learning_rate_ratio,
        lr_multipliers=tuple(multipliers), decay_mask=tuple(decay), weight_decay=cfg.weight_decay,
        momentum=cfg.momentum, grad_clip_norm=cfg.grad_clip_norm,
    )


def optimizer_shardings(distribution, param_shardings: list, state_len: int) -> list:
    """Where each optimizer state array lives: the step counter on every device, moments beside their parameter."""
    replicated = NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec())
    return [replicated] + [param_shardings[i % len(param_shardings)] for i in range(state_len - 1)]


def batch_sharding(distribution) -> NamedSharding:
    """`[steps, batch, ...]` arrays split over the devices along the batch axis."""
    return NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec(None, distribution.batch_dim_name))


class TrainStep:
    """`(state, frozen, batches) -> (state, (losses, accuracies))` over a stack of batches, jitted once.

    `state` = (trained variables, non-trainable variables incl. RNG and margins, optimizer state).
    `grad_accum_steps` = k > 1 splits each batch into k equal micro-batches run one after another
    (a `lax.scan`, so only one micro-batch's activations are alive): their gradients are averaged,
    then one optimizer update; the non-trainable state (RNG, margins) runs through them in order;
    the loss and accuracy reported are the whole batch's means.
    `compilations` counts traces of the step: one per run unless shapes or dtypes change.
    """

    def __init__(self, model: keras.Model, opt: Optimizer, trained: list[bool], label_smoothing: float,
                 distribution, grad_accum_steps: int = 1):

        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.model, self.opt, self.trained = model, opt, trained
        self.smoothing, self.distribution, self.compilations = label_smoothing, distribution, 0
        self.grad_accum_steps = grad_accum_steps
        self._jitted = None

    def _merge(self, trained_vals, frozen_vals):
        it_t, it_f = iter(trained_vals), iter(frozen_vals)
        return [next(it_t) if t else next(it_f) for t in self.trained]

    def _loss(self, logits, labels):

        n = logits.shape[-1]
        target = jax.nn.one_hot(labels, n) * (1 - self.smoothing) + self.smoothing / n
        return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))

    def _grads(self, frozen, trained, non_trainable, batch):
        """`((loss, accuracy, non_trainable), gradients)` of one batch or micro-batch."""
        inputs, labels = batch

        def loss_fn(trained):
            logits, nt = self.model.stateless_call(self._merge(trained, frozen), non_trainable, inputs,
                                                   training=True)
            return self._loss(logits, labels), (logits, nt)

        (loss, (logits, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return (loss, accuracy, non_trainable), grads

    def _micro_batches(self, batch):
        """`[B, ...]` -> `[k, B/k, ...]`; micro-batch m holds rows m, m + k, m + 2k, ...

        The batch is sharded over the devices in contiguous blocks of rows; taking every k-th row
        keeps each device's micro-batches within its own block (reshape to `[B/k, k]`, then swap),
        where k contiguous chunks would each sit on a few devices and have to be moved.
        """
        k = self.grad_accum_steps
        mesh = self.distribution.device_mesh.backend_mesh
        sharding = NamedSharding(mesh, PartitionSpec(None, self.distribution.batch_dim_name))

        def split(a):
            if a.shape[0] % k:
                raise ValueError(f"a batch of {a.shape[0]} does not split into grad_accum_steps={k} micro-batches")
            a = jnp.swapaxes(a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1)
            return jax.lax.with_sharding_constraint(a, sharding)

        return jax.tree.map(split, batch)

    def _accumulate(self, frozen, trained, non_trainable, batch):
        """The k micro-batches' mean loss, accuracy and gradients, and the state after the last."""

        def body(carry, micro):
            non_trainable, sums = carry
            (loss, accuracy, non_trainable), grads = self._grads(frozen, trained, non_trainable, micro)
            return (non_trainable, jax.tree.map(jnp.add, sums, (grads, loss, accuracy))), None

        zeros = ([jnp.zeros_like(p, dtype=jnp.float32) for p in trained], jnp.float32(0), jnp.float32(0))
        (non_trainable, (grads, loss, accuracy)), _ = jax.lax.scan(body, (non_trainable, zeros),
                                                                  self._micro_batches(batch))
        k = self.grad_accum_steps  # equal micro-batches: the mean of the means is the batch mean
        return (loss / k, accuracy / k, non_trainable), [g / k for g in grads]

    def _one(self, frozen, carry, batch):

        trained, non_trainable, opt_state = carry
        if self.grad_accum_steps == 1:
            (loss, accuracy, non_trainable), grads = self._grads(frozen, trained, non_trainable, batch)
        else:
            (loss, accuracy, non_trainable), grads = self._accumulate(frozen, trained, non_trainable, batch)
        trained, opt_state = self.opt.apply(opt_state, grads, trained)
        return (trained, non_trainable, opt_state), (loss, accuracy)

    def _run(self, state, frozen, batches):

        self.compilations += 1  # runs only while tracing
        with self.distribution.scope():
            if jax.tree.leaves(batches)[0].shape[0] == 1:  # no loop: XLA optimises a plain step better
                state, out = self._one(frozen, state, jax.tree.map(lambda a: a[0], batches))
                return state, jax.tree.map(lambda o: o[None], out)
            return jax.lax.scan(lambda c, b: self._one(frozen, c, b), state, batches)

    def _jit(self, state):
        if self._jitted is None:
            # the new state keeps the old one's placement, so the next call reuses the executable
            replicated = NamedSharding(self.distribution.device_mesh.backend_mesh, PartitionSpec())
            out = (jax.tree.map(lambda x: x.sharding, state), replicated)
            self._jitted = jax.jit(self._run, donate_argnums=0, out_shardings=out)
        return self._jitted

    def __call__(self, state, frozen, batches):
        return self._jit(state)(state, frozen, batches)

    def lower(self, state, frozen, batches) -> jax.stages.Lowered:
        """The step lowered for these inputs (arrays or `jax.ShapeDtypeStruct`s with shardings), not run."""
        return self._jit(state).lower(state, frozen, batches)

    def flops(self, state, frozen, batches) -> float | None:
        """XLA's FLOP count for one call (all its steps), from the compiled executable's cost analysis."""
        cost = self.lower(state, frozen, batches).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"]) if cost and "flops" in cost else None

    @property
    def executables(self) -> int:
        """Compiled executables in the jit cache (a recompile without a retrace shows here)."""
        return self._jitted._cache_size()


def _device_put_batches(batches, distribution):
    """Shard `[steps, batch, ...]` arrays over the devices along the batch axis."""
    return jax.device_put(batches, batch_sharding(distribution))


@dataclass
class StepSetup:
    """What `train` builds before it touches data or weights: models, trained mask, optimizer, step."""

    distribution: object  # keras.distribution.Distribution
    embedding_model: keras.Model
    training_model: keras.Model
    trained: list[bool]  # per trainable variable of training_model: updated (True) or frozen
    optimizer: Optimizer
    step: TrainStep


def build_step(model_cfg: ModelConfig, train_cfg: TrainConfig, num_classes: int, steps: int,
               devices=None) -> StepSetup:
    """The models, parameter groups, optimizer and jitted step of a run (`steps` per epoch).

    `devices`: as `distribution_for`. Variables are created by Keras as usual: inside a
    `keras.StatelessScope` they stay uninitialised (shapes only), which `xla_memory` relies on.
    """
    distribution = distribution_for(train_cfg, devices)
    with dtype_policy(train_cfg.precision), distribution.scope():
        embedding_model = build_embedding_model(model_cfg, remat=train_cfg.remat)
        training_model = build_training_model(embedding_model, num_classes, model_cfg.head)
    paths = [v.path for v in training_model.trainable_variables]
    trained, multipliers, decay = param_groups.plan(paths, train_cfg, model_cfg.vit.layers)
    opt = build_optimizer(train_cfg, steps, [m for m, t in zip(multipliers, trained) if t],
                          [d for d, t in zip(decay, trained) if t])
    train_step = TrainStep(training_model, opt, trained, train_cfg.label_smoothing, distribution,
                           grad_accum_steps=train_cfg.grad_accum_steps)
    return StepSetup(distribution, embedding_model, training_model, trained, opt, train_step)


def train(data_dir: DataDirs, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
          init_dir: str | Path | None = None, stop_after_steps: int | None = None) -> dict:
    """Train (or, with `init_dir`, continue from that run's output) and write the outputs.

    `data_dir`: data-prep's output directory, or the list of a split data-prep's part directories.

    A rerun into the same `out_dir` resumes from its newest checkpoint. `stop_after_steps` ends the
    run early after that many global steps (for tests and timing), leaving the checkpoints.
    """
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"training runs on Keras' JAX backend, not {keras.backend.backend()!r}: "
                           "set keras_backend = 'jax' (guie_nb.notebook.use_backend) before importing keras")
    if train_cfg.cached_embeddings:  # embed once, then neck + head on the stored features
        if stop_after_steps is not None:
            raise ValueError("stop_after_steps is not supported with cached_embeddings (no mid-run checkpoints)")
        from guie_nb.training.cached import train_cached

        return train_cached(data_dir, out_dir, model_cfg, train_cfg, init_dir=init_dir)

    out_dir = Path(out_dir)
    manifest = load_manifest(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = manifest["num_classes"]
    keras.utils.set_random_seed(train_cfg.seed)
    steps = steps_per_epoch(train_cfg, manifest["train_images"])
    setup = build_step(model_cfg, train_cfg, num_classes, steps)
    distribution, embedding_model, training_model = setup.distribution, setup.embedding_model, setup.training_model
    trained, opt, train_step = setup.trained, setup.optimizer, setup.step
    if init_dir is not None:
        load_training_weights(training_model, init_dir, num_classes)
    elif model_cfg.backbone_weights:  # pretrained backbone for a fresh run (a resume overwrites it)
        load_backbone_weights(embedding_model, model_cfg.backbone_weights, model_cfg.backbone)

    size, mode = model_cfg.input_size, model_cfg.resize_mode
    val = ValidationSet.from_manifest(data_dir, manifest)
    train_files = train_paths(data_dir, manifest)
    spe = train_cfg.steps_per_execution
    total_steps = train_cfg.epochs * steps
    fingerprint = {"train": train_cfg.fingerprint(), "model": json.dumps(model_cfg.to_dict(), sort_keys=True),
                   "init_weights": _file_digest(Path(init_dir) / TRAINING_WEIGHTS) if init_dir else None,
                   "data": [num_classes, manifest["train_images"], manifest["train_files"]]}

    margin_index = [v.path for v in training_model.non_trainable_variables].index("margin_head/margin")
    head = model_cfg.head
    counts = class_counts(train_files, num_classes) if head.margin_schedule == "dynamic" else None

    def margins(epoch):
        return margins_for_epoch(head.margin_schedule, epoch, num_classes, head.margin, head.margin_max,
                                 head.margin_growth, counts, head.margin_min)

    # resume, or start and score the untrained (or initial) model
    resumed = checkpoint.latest(out_dir)
    opt_state_np = None
    if resumed is not None:
        arrays, meta = resumed
        if meta["fingerprint"] != fingerprint:
            raise ValueError(f"{checkpoint.checkpoint_dir(out_dir)} holds a run with another configuration; "
                             "use a new out_dir, or delete the checkpoints to start over")
        for v, a in zip(training_model.variables, arrays["variables"]):
            v.assign(a)
        opt_state_np = arrays["optimizer"]
        step, history, initial = meta["step"], meta["history"], meta["initial"]
        partial = meta["partial"]
        print(f"resuming from step {step} of {total_steps} ({checkpoint.list_checkpoints(out_dir)[-1].name})")
    else:
        step, history, partial = 0, [], {"loss": 0.0, "accuracy": 0.0, "steps": 0, "seconds": 0.0}
        initial = evaluate_keras(embedding_model, val, size, mode)
        print("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in initial.items()))
    resumed_from = step

    # The loop's state lives in arrays that the step donates; Keras variables are written from it
    # (sync) before anything reads them, and the state is re-read from them afterwards, because
    # Keras' own predict step donates its inputs too.
    def committed(arrays):
        # explicit placement: a committed array and an uncommitted one compile to different executables
        return [jax.device_put(x, x.sharding) for x in arrays]

    def pull_state(opt_state):
        values = committed([v.value for v in training_model.trainable_variables])
        params = [x for x, t in zip(values, trained) if t]
        frozen = [x for x, t in zip(values, trained) if not t]
        return (params, committed([v.value for v in training_model.non_trainable_variables]), opt_state), frozen

    state, frozen = pull_state(None)
    # optimizer moments live where their parameters live; the step counter on every device
    opt_state = opt.init(state[0])

    shardings = optimizer_shardings(distribution, [p.sharding for p in state[0]], len(opt_state))
    opt_state = [jax.device_put(a, s) for a, s in zip(opt_state if opt_state_np is None else opt_state_np, shardings)]
    state = (state[0], state[1], opt_state)

    def sync_model():
        for v, x in zip([v for v, t in zip(training_model.trainable_variables, trained) if t], state[0]):
            v.assign(x)
        for v, x in zip(training_model.non_trainable_variables, state[1]):
            v.assign(x)

    def save_checkpoint():
        meta = {"fingerprint": fingerprint, "history": history, "initial": initial, "partial": partial}
        arrays = {"variables": [keras.ops.convert_to_numpy(v.value) for v in training_model.variables],
                  "optimizer": [np.asarray(x) for x in state[2]]}
        return checkpoint.save(out_dir, step, arrays, meta, keep=train_cfg.keep_checkpoints)

    started = time.time()
    images, first_call_seconds, steady_seconds = 0, None, 0.0  # the first call compiles; it is left out of images/s
    while step < total_steps and (stop_after_steps is None or step < stop_after_steps):
        epoch, in_epoch = divmod(step, steps)
        nt = list(state[1])
        nt[margin_index] = jax.device_put(margins(epoch), nt[margin_index].sharding)
        state = (state[0], nt, state[2])
        ds = train_dataset(train_files, size, train_cfg.batch_size, seed=train_cfg.seed, epoch=epoch,
                           steps=steps, skip_steps=in_epoch, steps_per_execution=spe,
                           original_size=model_cfg.size_features)
        t0 = time.time()
        progress = EpochProgress(epoch + 1, train_cfg.epochs, steps, train_cfg.batch_size, done=in_epoch)
        for batches in ds.as_numpy_iterator():
            t_call = time.time()
            state, (losses, accs) = train_step(state, frozen, _device_put_batches(batches, distribution))
            losses, accs = np.asarray(losses), np.asarray(accs)
            if first_call_seconds is None:
                first_call_seconds = time.time() - t_call
            else:
                images += len(losses) * train_cfg.batch_size
                steady_seconds += time.time() - t_call
            if not np.all(np.isfinite(losses)):
                bad = step + int(np.argmin(np.isfinite(losses)))
                last = checkpoint.list_checkpoints(out_dir)
                raise FloatingPointError(
                    f"training loss became non-finite at step {bad} (epoch {epoch + 1}): {losses.tolist()}. "
                    f"Stopped; the last good checkpoint is kept ({last[-1] if last else 'none written yet'}). "
                    "Lower learning_rate, set grad_clip_norm, or check the data.")
            step += len(losses)
            partial["loss"] += float(np.sum(losses, dtype=np.float64))
            partial["accuracy"] += float(np.sum(accs, dtype=np.float64))
            partial["steps"] += len(losses)
            progress.update(step - epoch * steps, partial["loss"] / partial["steps"], float(opt.learning_rate(step - 1)))
            if stop_after_steps is not None and step >= stop_after_steps:
                break
            if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0 and step % steps:
                partial["seconds"] += time.time() - t0
                sync_model()
                progress.write(f"checkpoint {save_checkpoint().name}")
                state, frozen = pull_state(state[2])
                t0 = time.time()
        progress.close()
        partial["seconds"] += time.time() - t0
        if step % steps:  # stopped early, mid-epoch
            break
        sync_model()
        scores = evaluate_keras(embedding_model, val, size, mode)
        row = {"epoch": epoch + 1, "step": step, "loss": partial["loss"] / partial["steps"],
               "accuracy": partial["accuracy"] / partial["steps"],
               "learning_rate": float(opt.learning_rate(step - 1)), "margin": float(np.mean(margins(epoch))),
               "seconds": partial["seconds"], **{f"val_{k}": v for k, v in scores.items()}}
        history.append(row)
        partial = {"loss": 0.0, "accuracy": 0.0, "steps": 0, "seconds": 0.0}
        print(f"epoch {epoch + 1}/{train_cfg.epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.3f} "
              + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({row['seconds']:.1f} s)")
        save_checkpoint()
        state, frozen = pull_state(state[2])
    seconds = time.time() - started
    sync_model()

    if step < total_steps:
        if step % steps:
            save_checkpoint()
        print(f"stopped at step {step} of {total_steps}; rerun to resume")
        return {"step": step, "total_steps": total_steps, "train_step_compilations": train_step.compilations}

    model_cfg.save(out_dir / "model_config.json")
    (out_dir / "train_config.json").write_text(json.dumps(train_cfg.to_dict(), indent=2))
    training_model.save_weights(out_dir / TRAINING_WEIGHTS)
    embedding_model.save_weights(out_dir / EMBEDDING_WEIGHTS)
    write_history(out_dir / "history.csv", history)
    final = {k.removeprefix("val_"): v for k, v in history[-1].items() if k.startswith("val_")}
    metrics = {
        "initial": initial, "final": final, "epochs": train_cfg.epochs, "steps_per_epoch": steps,
        "step": step, "total_steps": total_steps, "resumed_from_step": resumed_from,
        "train_seconds": seconds, "first_call_seconds": first_call_seconds,
        "images_per_second": images / steady_seconds if images else None,
        "train_step_compilations": train_step.compilations,
        "train_step_executables": train_step.executables, "backend": keras.backend.backend(),
        "devices": len(jax.devices()), "device_kind": jax.devices()[0].device_kind,
        "layout": train_cfg.layout, "mesh": dict(zip(distribution.device_mesh.axis_names, distribution.device_mesh.shape)),
        "precision": train_cfg.precision, "num_classes": num_classes,
        "remat": train_cfg.remat, "grad_accum_steps": train_cfg.grad_accum_steps,
        # images through the backbone over the whole run (every session): each step's batch, and the
        # validation queries + index at the start and after every epoch
        "backbone_forward_passes": step * train_cfg.batch_size + (1 + len(history)) * _count_records(
            val.query_files + val.index_files),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _count_records(files: list[Path]) -> int:
    from guie_nb.data.tfrecord_format import iter_records

    return sum(1 for f in files for _ in iter_records(f, verify=False))


def _file_digest(path: Path) -> str:
    import hashlib

    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}: run the training notebook first")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def write_history(path: Path, history: list[dict]) -> None:
    keys = list(history[0]) if history else ["epoch"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
