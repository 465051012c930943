"""The training loop: data -> model -> jitted multi-step train function -> validation -> outputs.

Keras 3 on the JAX backend (Kaggle's TPU v5e-8 runs JAX; the same code runs on GPU and CPU).
The model is Keras; the step is `model.stateless_call` + `jax.value_and_grad` + an Optax
optimizer (`guie_nb.training.optim`), scanned over `steps_per_execution` batches in one compiled
call, on a `TrainState` pytree. Batches are sharded over the devices by a `keras.distribution`
(data parallel by default).

Resumable: an Orbax checkpoint (the train state, and where training stands) is written every
`checkpoint_every` steps and at every epoch end, in the background; a rerun with the same
configuration continues from the newest complete one and, because the data stream is a function
of (seed, epoch, position), ends with the same weights as an uninterrupted run.

Outputs in `out_dir`: the files `guie_nb.run_dir` names (configs, weights, history, metrics, checkpoints).

`train` reads top to bottom: set-up, restore (or score the starting point), the epoch loop,
outputs. Multi-host (a TPU pod slice, one process per host) hooks in through
`guie_nb.training.distributed`, at the places marked "multi-host": each process's rows of the
global batch (`train_dataset(rows=...)`, `put_batches`), the gathered evaluation in `evaluate`,
and `write_outputs` on process 0 only.
Orbax checkpoints are written by every process (each its shards) and need no hook.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from guie_nb import run_dir
from guie_nb.data import resampling
from guie_nb.data.pipeline import train_dataset
from guie_nb.data.prepare import DataDirs, load_manifest, source_labels, train_paths
from guie_nb.evaluation import ValidationSet
from guie_nb.model.embedding import ModelConfig, build_embedding_model, build_training_model
from guie_nb.model.margin_heads import margins_for_epoch
from guie_nb.model.sharding import make_distribution
from guie_nb.model.weights import load_pretrained_backbones
from guie_nb.training import checkpoint, distributed, param_groups
from guie_nb.training.config import TrainConfig
from guie_nb.training.optim import optimizer_for, schedule_for
from guie_nb.training.progress import EpochProgress
from guie_nb.training.transfer import load_training_weights

MARGIN_VARIABLE = "margin_head/margin"


# ---- devices ---------------------------------------------------------------------------------

def distribution_for(cfg: TrainConfig, devices=None):
    """The one place that picks how the run is spread over the devices (guie_nb.model.sharding).

    `devices`: the mesh's devices (default: all local ones; `xla_memory` passes a TPU topology's).
    """
    distributed.check_layout(cfg.layout)  # multi-host
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


def replicated(distribution) -> NamedSharding:
    """On every device of the distribution's mesh (scalars: the step counters)."""
    return NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec())


def batch_sharding(distribution) -> NamedSharding:
    """`[steps, batch, ...]` arrays split over the devices along the batch axis."""
    return NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec(None, distribution.batch_dim_name))


def put_batches(batches, distribution):
    """numpy `[steps, batch, ...]` arrays (from `train_dataset`) -> device arrays sharded along the
    batch axis. The one place host batches become device arrays (multi-host: this process's rows,
    `distributed.process_rows`, assembled into the global batch)."""
    return distributed.global_batch(batches, batch_sharding(distribution))


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


# ---- the train state and the step ------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """Everything the train step reads and writes, as one pytree; a checkpoint holds exactly this.

    `params`: the trained variables' values (the training model's `trainable_variables` in order,
    frozen ones left out); `frozen`: the trainable variables held fixed (frozen groups);
    `non_trainable`: `non_trainable_variables` (dropout RNG state, the margin head's margins);
    `opt_state`: the Optax state of `params`; `step`: the global step (int32 scalar).
    """

    params: list
    frozen: list
    non_trainable: list
    opt_state: optax.OptState
    step: jax.Array


class TrainStep:
    """`(state, batches) -> (state, (losses, accuracies))` over a stack of batches, jitted once.

    `grad_accum_steps` = k > 1 splits each batch into k equal micro-batches run one after another
    (a `lax.scan`, so only one micro-batch's activations are alive): their gradients are averaged,
    then one optimizer update; the non-trainable state (RNG, margins) runs through them in order;
    the loss and accuracy reported are the whole batch's means.
    `compilations` counts traces of the step: one per run unless shapes or dtypes change.
    """

    def __init__(self, model: keras.Model, optimizer: optax.GradientTransformation, trained: list[bool],
                 label_smoothing: float, distribution, grad_accum_steps: int = 1):
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.model, self.optimizer, self.trained = model, optimizer, trained
        self.smoothing, self.distribution, self.compilations = label_smoothing, distribution, 0
        self.grad_accum_steps = grad_accum_steps
        self._jitted = None

    def _merge(self, params, frozen):
        """The training model's `trainable_variables` values, in order."""
        it_p, it_f = iter(params), iter(frozen)
        return [next(it_p) if t else next(it_f) for t in self.trained]

    def _loss(self, logits, labels):
        n = logits.shape[-1]
        target = jax.nn.one_hot(labels, n) * (1 - self.smoothing) + self.smoothing / n
        return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))

    def _grads(self, params, frozen, non_trainable, batch):
        """`((loss, accuracy, non_trainable), gradients)` of one batch or micro-batch."""
        inputs, labels = batch

        def loss_fn(params):
            logits, nt = self.model.stateless_call(self._merge(params, frozen), non_trainable, inputs, training=True)
            return self._loss(logits, labels), (logits, nt)

        (loss, (logits, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return (loss, accuracy, non_trainable), grads

    def _micro_batches(self, batch):
        """`[B, ...]` -> `[k, B/k, ...]`; micro-batch m holds rows m, m + k, m + 2k, ...

        The batch is sharded over the devices in contiguous blocks of rows; taking every k-th row
        keeps each device's micro-batches within its own block (reshape to `[B/k, k]`, then swap),
        where k contiguous chunks would each sit on a few devices and have to be moved.
        """
        k = self.grad_accum_steps
        sharding = batch_sharding(self.distribution)

        def split(a):
            if a.shape[0] % k:
                raise ValueError(f"a batch of {a.shape[0]} does not split into grad_accum_steps={k} micro-batches")
            a = jnp.swapaxes(a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1)
            return jax.lax.with_sharding_constraint(a, sharding)

        return jax.tree.map(split, batch)

    def _accumulate(self, params, frozen, non_trainable, batch):
        """The k micro-batches' mean loss, accuracy and gradients, and the state after the last."""

        def body(carry, micro):
            non_trainable, sums = carry
            (loss, accuracy, non_trainable), grads = self._grads(params, frozen, non_trainable, micro)
            return (non_trainable, jax.tree.map(jnp.add, sums, (grads, loss, accuracy))), None

        zeros = ([jnp.zeros_like(p, dtype=jnp.float32) for p in params], jnp.float32(0), jnp.float32(0))
        (non_trainable, (grads, loss, accuracy)), _ = jax.lax.scan(body, (non_trainable, zeros),
                                                                  self._micro_batches(batch))
        k = self.grad_accum_steps  # equal micro-batches: the mean of the means is the batch mean
        return (loss / k, accuracy / k, non_trainable), [g / k for g in grads]

    def _one(self, state: TrainState, batch) -> tuple[TrainState, tuple]:
        gradients = self._grads if self.grad_accum_steps == 1 else self._accumulate
        (loss, accuracy, non_trainable), grads = gradients(state.params, state.frozen, state.non_trainable, batch)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, state.frozen, non_trainable, opt_state, state.step + 1), (loss, accuracy)

    def _run(self, state: TrainState, batches):
        self.compilations += 1  # runs only while tracing
        with self.distribution.scope():
            if jax.tree.leaves(batches)[0].shape[0] == 1:  # no loop: XLA optimises a plain step better
                state, out = self._one(state, jax.tree.map(lambda a: a[0], batches))
                return state, jax.tree.map(lambda o: o[None], out)
            return jax.lax.scan(self._one, state, batches)

    def _jit(self, state: TrainState):
        if self._jitted is None:
            # the new state keeps the old one's placement, so the next call reuses the executable
            out = (jax.tree.map(lambda x: x.sharding, state), replicated(self.distribution))
            self._jitted = jax.jit(self._run, donate_argnums=0, out_shardings=out)
        return self._jitted

    def __call__(self, state: TrainState, batches) -> tuple[TrainState, tuple]:
        return self._jit(state)(state, batches)

    def lower(self, state: TrainState, batches) -> jax.stages.Lowered:
        """The step lowered for these inputs (arrays or `jax.ShapeDtypeStruct`s with shardings), not run."""
        return self._jit(state).lower(state, batches)

    def flops(self, state: TrainState, batches) -> float | None:
        """XLA's FLOP count for one call (all its steps), from the compiled executable's cost analysis."""
        cost = self.lower(state, batches).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"]) if cost and "flops" in cost else None

    @property
    def executables(self) -> int:
        """Compiled executables in the jit cache (a recompile without a retrace shows here)."""
        return self._jitted._cache_size()


def _committed(arrays: list) -> list:
    # explicit placement: a committed array and an uncommitted one compile to different executables
    return [jax.device_put(x, x.sharding) for x in arrays]


@dataclass
class StepSetup:
    """What `train` builds before it touches data or weights: models, parameter plan, optimizer, step.

    The Keras variables hold the weights between steps only at the edges (loading, evaluation,
    saving); `state_from_model` and `write_to_model` move them into and out of a `TrainState`.
    """

    distribution: object  # keras.distribution.Distribution
    embedding_model: keras.Model
    training_model: keras.Model
    plan: param_groups.ParamPlan  # per trainable variable: group, trained?, lr multiplier, decay?
    optimizer: optax.GradientTransformation
    learning_rate: Callable  # step -> learning rate (before group multipliers)
    step: TrainStep

    @property
    def trained(self) -> list[bool]:
        return self.plan.trained

    def _split(self, values: list) -> tuple[list, list]:
        return ([x for x, t in zip(values, self.trained) if t], [x for x, t in zip(values, self.trained) if not t])

    def _opt_shardings(self, params: list):
        """Where each optimizer state array lives: moments beside their parameter, counters everywhere."""
        shapes = jax.eval_shape(self.optimizer.init, params)
        return optax.tree_map_params(self.optimizer, lambda _, s: s, shapes, [p.sharding for p in params],
                                     transform_non_params=lambda _: replicated(self.distribution))

    def abstract_state(self) -> TrainState:
        """The state as `jax.ShapeDtypeStruct`s placed as the distribution places each variable
        (no values needed: works on uninitialised variables and a TPU topology's devices)."""
        dist = self.distribution

        def spec(v):
            return jax.ShapeDtypeStruct(tuple(v.shape), v.dtype, sharding=dist.get_variable_layout(v).backend_layout)

        params, frozen = self._split([spec(v) for v in self.training_model.trainable_variables])
        opt_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                 jax.eval_shape(self.optimizer.init, params), self._opt_shardings(params))
        return TrainState(params, frozen, [spec(v) for v in self.training_model.non_trainable_variables], opt_state,
                          jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated(dist)))

    def state_from_model(self, opt_state, step) -> TrainState:
        """The Keras variables' current values with this optimizer state and step. Read again after
        any Keras call (evaluation): Keras' predict step donates the variables' buffers."""
        model = self.training_model
        params, frozen = self._split(_committed([v.value for v in model.trainable_variables]))
        return TrainState(params, frozen, _committed([v.value for v in model.non_trainable_variables]), opt_state,
                          step)

    def initial_state(self) -> TrainState:
        """The Keras variables' values, a fresh optimizer state placed beside them, step 0."""
        params, _ = self._split(_committed([v.value for v in self.training_model.trainable_variables]))
        opt_state = jax.jit(self.optimizer.init, out_shardings=self._opt_shardings(params))(params)
        return self.state_from_model(opt_state, jax.device_put(jnp.int32(0), replicated(self.distribution)))

    def write_to_model(self, state: TrainState) -> None:
        """Assign `state`'s values to the Keras variables (before evaluating or saving weights)."""
        model = self.training_model
        for v, x in zip(model.trainable_variables, self.step._merge(state.params, state.frozen)):
            v.assign(x)
        for v, x in zip(model.non_trainable_variables, state.non_trainable):
            v.assign(x)


def build_step(model_cfg: ModelConfig, train_cfg: TrainConfig, num_classes: int, steps: int,
               devices=None) -> StepSetup:
    """The models, parameter groups, optimizer and jitted step of a run (`steps` per epoch).

    `devices`: as `distribution_for`. Variables are created by Keras as usual: inside a
    `keras.StatelessScope` they stay uninitialised (shapes only), which `xla_memory` relies on.
    Raises ValueError for a variable of no parameter group (`guie_nb.model.param_groups`), and for
    an extra backbone deeper than `backbone`.
    """
    # concatenated towers (extra_backbones) repeat the variable paths (`resblocks_<i>/...`), so
    # block i of every tower is in group block_i: a deeper extra tower would have blocks of no group
    deeper = [e["backbone"] for e, v in zip(model_cfg.extra_backbones, model_cfg.extra_vits)
              if v.layers > model_cfg.vit.layers]
    if deeper:
        raise ValueError(f"extra_backbones {deeper} have more blocks than backbone {model_cfg.backbone} "
                         f"({model_cfg.vit.layers}); to train, make the deepest one `backbone`")
    distribution = distribution_for(train_cfg, devices)
    with dtype_policy(train_cfg.precision), distribution.scope():
        embedding_model = build_embedding_model(model_cfg, remat=train_cfg.remat)
        training_model = build_training_model(embedding_model, num_classes, model_cfg.head)
    plan = param_groups.plan([v.path for v in training_model.trainable_variables], train_cfg, model_cfg.vit.layers)
    optimizer = optimizer_for(train_cfg, steps, *plan.of_trained())
    train_step = TrainStep(training_model, optimizer, plan.trained, train_cfg.label_smoothing, distribution,
                           grad_accum_steps=train_cfg.grad_accum_steps)
    return StepSetup(distribution, embedding_model, training_model, plan, optimizer,
                     schedule_for(train_cfg, steps), train_step)


# ---- data, evaluation and where a run stands -------------------------------------------------

@dataclass
class TrainingData:
    """The run's training files, held-out validation set and per-epoch margins."""

    files: list[Path]
    val: ValidationSet
    num_classes: int
    train_images: int  # one epoch's images: those of `train_sources`, or all (resampled: the expected draws)
    manifest: dict
    model_cfg: ModelConfig
    counts: np.ndarray | None  # images per class (the dynamic margin schedule only)
    label_ranges: list[tuple[int, int]] | None  # TrainConfig.train_sources as label ranges; None: all
    # per class, how many times each image is read per epoch (TrainConfig.min_draws_per_class); None: once
    class_repeats: np.ndarray | None = None

    @classmethod
    def load(cls, data_dir: DataDirs, model_cfg: ModelConfig, train_sources: list[str] | None = None,
             min_draws_per_class: int = 0) -> "TrainingData":
        """`data_dir`: data-prep's output directory, or the list of a split data-prep's part directories.
        The training files are chosen here: all of them, in every process of a multi-host run too
        (each decodes only its rows of every batch).
        `train_sources`: train on these data-prep sources only (`prepare.source_labels`; ValueError
        naming an unknown one); validation is unchanged. `min_draws_per_class` > 0: class
        resampling (`guie_nb.data.resampling`, from the manifest's class counts, the same in every
        process); `train_images` is then the resampled epoch's expected length."""
        manifest = load_manifest(data_dir)
        files = train_paths(data_dir, manifest)
        head, n = model_cfg.head, manifest["num_classes"]
        label_ranges, images = (source_labels(manifest, train_sources) if train_sources
                                else (None, manifest["train_images"]))
        # the manifest's per-class counts: the same in every process, no pass over the records
        per_class = resampling.manifest_class_counts(manifest)
        counts = per_class if head.margin_schedule == "dynamic" else None
        repeats = None
        if min_draws_per_class:
            repeats = resampling.repeat_factors(per_class, min_draws_per_class)
            images = resampling.epoch_images(per_class, min_draws_per_class, label_ranges)
        return cls(files, ValidationSet.from_manifest(data_dir, manifest), n, images, manifest,
                   model_cfg, counts, label_ranges, repeats)

    def val_images(self) -> int:
        """Validation queries + index images: what one evaluation runs through the model."""
        from guie_nb.data.tfrecord_format import iter_records

        return sum(1 for f in (*self.val.query_files, *self.val.index_files) for _ in iter_records(f, verify=False))

    def margins(self, epoch: int) -> np.ndarray:
        """The margin head's per-class margins in `epoch` (0-based; guie_nb.model.margin_heads)."""
        h = self.model_cfg.head
        return margins_for_epoch(h.margin_schedule, epoch, self.num_classes, h.margin, h.margin_max,
                                 h.margin_growth, self.counts, h.margin_min)


def evaluate(run: StepSetup, data: TrainingData) -> dict[str, float]:
    """Validation scores (mP@5, ...) of the embedding model's current Keras weights."""
    cfg = data.model_cfg
    # multi-host: each process embeds its rows, gathered to every process
    return distributed.evaluate_keras(run.embedding_model, data.val, cfg.input_size, cfg.resize_mode, run.distribution)


def _zero_partial() -> dict:
    return {"loss": 0.0, "accuracy": 0.0, "steps": 0, "seconds": 0.0}


@dataclass
class RunLog:
    """Where a run stands (a checkpoint's JSON metadata): the initial scores, one history row per
    finished epoch, and the running sums of the epoch in progress."""

    initial: dict
    history: list[dict] = field(default_factory=list)
    partial: dict = field(default_factory=_zero_partial)

    def add(self, losses: np.ndarray, accuracies: np.ndarray) -> None:
        self.partial["loss"] += float(np.sum(losses, dtype=np.float64))
        self.partial["accuracy"] += float(np.sum(accuracies, dtype=np.float64))
        self.partial["steps"] += len(losses)

    def meta(self, fingerprint: dict) -> dict:
        """A checkpoint's JSON metadata: this log and the run's configuration fingerprint."""
        # a copy: the JSON is written in the background while the log moves on
        return copy.deepcopy({"fingerprint": fingerprint, "history": self.history, "initial": self.initial,
                              "partial": self.partial})

    def mean_loss(self) -> float:
        return self.partial["loss"] / self.partial["steps"]

    def end_epoch(self, epoch: int, step: int, learning_rate: float, margin: float, scores: dict) -> dict:
        """Close epoch `epoch` (1-based) at global `step`: its `history.csv` row."""
        p = self.partial
        row = {"epoch": epoch, "step": step, "loss": p["loss"] / p["steps"], "accuracy": p["accuracy"] / p["steps"],
               "learning_rate": learning_rate, "margin": margin, "seconds": p["seconds"],
               **{f"val_{k}": v for k, v in scores.items()}}
        self.history.append(row)
        self.partial = _zero_partial()
        return row


@dataclass
class Throughput:
    """Images per second over the steady calls (the first call compiles and is timed apart)."""

    images: int = 0
    seconds: float = 0.0
    first_call_seconds: float | None = None

    def add(self, images: int, seconds: float) -> None:
        if self.first_call_seconds is None:
            self.first_call_seconds = seconds
        else:
            self.images, self.seconds = self.images + images, self.seconds + seconds

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.images else None


def _fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, init_dir) -> dict:
    """What a checkpoint must match to be resumed: configs, initial weights, data."""
    return {"train": train_cfg.fingerprint(), "model": json.dumps(model_cfg.to_dict(), sort_keys=True),
            "init_weights": _file_digest(Path(init_dir) / run_dir.TRAINING_WEIGHTS) if init_dir else None,
            "data": [data.num_classes, data.train_images, data.manifest["train_files"]]}


def _require_jax_backend() -> None:
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"training runs on Keras' JAX backend, not {keras.backend.backend()!r}: "
                           "set keras_backend = 'jax' (guie_nb.notebook.use_backend) before importing keras")


# ---- the run ---------------------------------------------------------------------------------

def train(data_dir: DataDirs, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
          init_dir: str | Path | None = None, stop_after_steps: int | None = None) -> dict:
    """Train (or, with `init_dir`, continue from that run's output) and write the outputs.

    `data_dir`: data-prep's output directory, or the list of a split data-prep's part directories.

    A rerun into the same `out_dir` resumes from its newest complete checkpoint. `stop_after_steps`
    ends the run early after that many global steps (for tests and timing), leaving the checkpoints.
    Returns the metrics (`metrics.json`), or, stopped early, `{step, total_steps, ...}`.
    Raises FloatingPointError on a non-finite loss (the last good checkpoint is kept), ValueError
    for checkpoints of another configuration in `out_dir`.
    """
    # -- set-up: data, models, optimizer, step
    _require_jax_backend()
    if train_cfg.cached_embeddings:  # embed once, then neck + head on the stored features
        from guie_nb.training.cached import train_cached

        return train_cached(data_dir, out_dir, model_cfg, train_cfg, init_dir=init_dir,
                            stop_after_steps=stop_after_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = TrainingData.load(data_dir, model_cfg, train_cfg.train_sources, train_cfg.min_draws_per_class)
    keras.utils.set_random_seed(train_cfg.seed)
    steps = steps_per_epoch(train_cfg, data.train_images)
    total_steps = train_cfg.epochs * steps
    run = build_step(model_cfg, train_cfg, data.num_classes, steps)
    if init_dir is not None:
        load_training_weights(run.training_model, init_dir, data.num_classes)
    elif model_cfg.backbone_weights or model_cfg.extra_backbones:  # pretrained backbones for a fresh run
        load_pretrained_backbones(run.embedding_model, model_cfg)  # (a resume overwrites them)
    fingerprint = _fingerprint(model_cfg, train_cfg, data, init_dir)
    margin_index = [v.path for v in run.training_model.non_trainable_variables].index(MARGIN_VARIABLE)

    with checkpoint.Checkpoints(out_dir, keep=train_cfg.keep_checkpoints) as checkpoints:  # waits for saves on exit
        # -- restore, or score the starting point
        if checkpoints.latest_step() is not None:
            state, meta = checkpoints.restore(run.initial_state())  # the target: shapes and placement
            if meta["fingerprint"] != fingerprint:
                raise ValueError(f"{checkpoints.directory} holds a run with another configuration; "
                                 "use a new out_dir, or delete the checkpoints to start over")
            log = RunLog(meta["initial"], meta["history"], meta["partial"])
            step = meta["step"]
            print(f"resuming from step {step} of {total_steps} ({checkpoint.list_checkpoints(out_dir)[-1].name})")
        else:
            log, step = RunLog(evaluate(run, data)), 0
            state = run.initial_state()  # after evaluating: Keras' predict step donates the variables' buffers
            print("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in log.initial.items()))
        resumed_from, started, speed = step, time.time(), Throughput()
        rows = distributed.process_rows(batch_sharding(run.distribution),  # multi-host: this process's rows
                                        (train_cfg.steps_per_execution, train_cfg.batch_size), axis=1)

        # -- the epoch loop
        while step < total_steps and (stop_after_steps is None or step < stop_after_steps):
            epoch, in_epoch = divmod(step, steps)
            state = _with_margins(state, margin_index, data.margins(epoch))
            ds = train_dataset(data.files, model_cfg.input_size, train_cfg.batch_size, seed=train_cfg.seed,
                               epoch=epoch, steps=steps, skip_steps=in_epoch,
                               steps_per_execution=train_cfg.steps_per_execution,
                               original_size=model_cfg.size_features, rows=rows,
                               label_ranges=data.label_ranges, class_repeats=data.class_repeats)
            t0 = time.time()
            progress = EpochProgress(epoch + 1, train_cfg.epochs, steps, train_cfg.batch_size, done=in_epoch)
            for batches in ds.as_numpy_iterator():
                t_call = time.time()
                state, (losses, accs) = run.step(state, put_batches(batches, run.distribution))
                losses, accs = np.asarray(losses), np.asarray(accs)
                speed.add(len(losses) * train_cfg.batch_size, time.time() - t_call)
                checkpoint.stop_if_not_finite(losses, step, epoch, checkpoints)
                step += len(losses)
                log.add(losses, accs)
                progress.update(step - epoch * steps, log.mean_loss(), float(run.learning_rate(step - 1)))
                if stop_after_steps is not None and step >= stop_after_steps:
                    break
                if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0 and step % steps:
                    log.partial["seconds"] += time.time() - t0
                    t0 = time.time()
                    saved = checkpoints.save(step, state, log.meta(fingerprint))  # returns once copied to the host
                    progress.write(f"checkpoint {saved.name}")
            progress.close()
            log.partial["seconds"] += time.time() - t0
            if step % steps:  # stopped early, mid-epoch
                break
            run.write_to_model(state)
            scores = evaluate(run, data)
            state = run.state_from_model(state.opt_state, state.step)  # evaluation donated the buffers
            row = log.end_epoch(epoch + 1, step, float(run.learning_rate(step - 1)),
                                float(np.mean(data.margins(epoch))), scores)
            print(f"epoch {epoch + 1}/{train_cfg.epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.3f} "
                  + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({row['seconds']:.1f} s)")
            checkpoints.save(step, state, log.meta(fingerprint))
        seconds = time.time() - started
        run.write_to_model(state)
        if step < total_steps:
            if step % steps:
                checkpoints.save(step, state, log.meta(fingerprint))
            print(f"stopped at step {step} of {total_steps}; rerun to resume")
            return {"step": step, "total_steps": total_steps, "train_step_compilations": run.step.compilations}

    # -- outputs
    metrics = {
        "initial": log.initial, "final": {k.removeprefix("val_"): v for k, v in log.history[-1].items()
                                          if k.startswith("val_")},
        "epochs": train_cfg.epochs, "steps_per_epoch": steps, "step": step, "total_steps": total_steps,
        "resumed_from_step": resumed_from, "train_seconds": seconds, "first_call_seconds": speed.first_call_seconds,
        "images_per_second": speed.images_per_second, "train_step_compilations": run.step.compilations,
        "train_step_executables": run.step.executables, "backend": keras.backend.backend(),
        "devices": len(jax.devices()), "processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind, "layout": train_cfg.layout,
        "mesh": dict(zip(run.distribution.device_mesh.axis_names, run.distribution.device_mesh.shape)),
        "precision": train_cfg.precision, "num_classes": data.num_classes, "remat": train_cfg.remat,
        "grad_accum_steps": train_cfg.grad_accum_steps,
        # images through the backbone over the whole run (every session): each step's batch, and the
        # validation queries + index at the start and after every epoch
        "backbone_forward_passes": step * train_cfg.batch_size + (1 + len(log.history)) * data.val_images(),
    }
    if distributed.is_writer():  # multi-host: process 0 alone writes the outputs
        write_outputs(out_dir, run.training_model, run.embedding_model, model_cfg, train_cfg, log.history, metrics)
    return metrics


def _with_margins(state: TrainState, index: int, margins: np.ndarray) -> TrainState:
    """`state` with the margin head's per-class margins (non-trainable variable `index`) replaced."""
    placed = jax.device_put(margins, state.non_trainable[index].sharding)
    return dataclasses.replace(state, non_trainable=[placed if i == index else x
                                                     for i, x in enumerate(state.non_trainable)])


def write_outputs(out_dir: Path, training_model: keras.Model, embedding_model: keras.Model, model_cfg: ModelConfig,
                  train_cfg: TrainConfig, history: list[dict], metrics: dict) -> None:
    """A finished run's files (`guie_nb.run_dir`), from the Keras models' current weights (the
    on-the-fly trainer's and `guie_nb.training.cached`'s)."""
    model_cfg.save(out_dir / run_dir.MODEL_CONFIG)
    (out_dir / run_dir.TRAIN_CONFIG).write_text(json.dumps(train_cfg.to_dict(), indent=2))
    training_model.save_weights(out_dir / run_dir.TRAINING_WEIGHTS)
    embedding_model.save_weights(out_dir / run_dir.EMBEDDING_WEIGHTS)
    write_history(out_dir / run_dir.HISTORY, history)
    (out_dir / run_dir.METRICS).write_text(json.dumps(metrics, indent=2))


def _file_digest(path: Path) -> str:
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
