"""Training the neck and margin head on cached backbone features (`TrainConfig.cached_embeddings`).

With `freeze_backbone`, the on-the-fly trainer runs the backbone's forward pass on every image
of every epoch (and on the validation set after every epoch), although its output never changes.
Here the frozen backbone embeds each training and validation image once
(`guie_nb.training.feature_cache`, sharded and resumable under `out_dir/feature_cache/`), then
the neck (`[BN] -> Dropout -> [hidden] -> projection`, the embedding model's own layers, reused
through `guie_nb.model.embedding.apply_neck`) and the margin head train on those features: one
compiled call per epoch (a `lax.scan` over its steps, batches gathered on the device from the
features held there), so the steps cost microseconds. 5th place trained its BN + Linear head on
precomputed ViT-H-14 embeddings this way (0.688 private); 3rd place's first stage is head-only.

Same optimizer, schedule, label smoothing, margin schedule and validation mP@5 per epoch as
`guie_nb.training.trainer.train`; the outputs are the normal run folder (`guie_nb.run_dir`; its
embedding weights = backbone + trained neck), so fine-tuning and export read it unchanged.

Resumable as the on-the-fly trainer: an Orbax checkpoint (`guie_nb.training.checkpoint`) of the
neck + head state after every epoch, with the trainer's `RunLog` metadata; a rerun reuses the cache
and continues from the newest complete checkpoint.

Differences from the on-the-fly path: the features are of the evaluation preprocessing, without
augmentation (see `TrainConfig.cached_embeddings`); the neck + head train on one device per
process (they are small; the embedding pass uses the run's devices); checkpoints only at epoch
ends (an epoch is one compiled call of seconds). Multi-process, each process embeds its share of
the cache's files and all train the same neck + head on every cached row (see `train_cached`).
A continuation (`init_dir`, the fine-tune notebook) with the same frozen backbone, input size and
data reuses `init_dir`'s cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np

import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from guie_nb.data import resampling
from guie_nb.data.prepare import DataDirs
from guie_nb.evaluation import score
from guie_nb.model.embedding import ModelConfig, apply_neck, build_embedding_model, build_training_model
from guie_nb.model.weights import load_backbone_weights
from guie_nb.training import checkpoint, distributed, param_groups
from guie_nb.training.config import TrainConfig
from guie_nb.training.feature_cache import (FeatureCache, backbone_fingerprint, build_feature_cache, cache_dir,
                                            cache_spec, is_complete, load_feature_cache)
from guie_nb.training.optim import optimizer_for, schedule_for
from guie_nb.training.transfer import load_training_weights


def _optimizer(train_cfg: TrainConfig, steps: int, plan: param_groups.ParamPlan):
    """`(init(params) -> state, update(state, grads, params) -> (params, state), learning_rate(step))`
    over the list of trained parameters: the run's Optax transform (`optim.optimizer_for`, the same
    per-group learning-rate multipliers and decay mask as the on-the-fly trainer) and its schedule."""
    opt = optimizer_for(train_cfg, steps, *plan.of_trained())

    def update(state, grads, params):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return opt.init, update, schedule_for(train_cfg, steps)


def epoch_indices(seed: int, epoch: int, n: int, steps: int, batch_size: int,
                  repeats: np.ndarray | None = None) -> np.ndarray:
    """int32 `[steps, batch_size]`: rows of the cache for each step of `epoch`, a seeded permutation
    per pass (a pure function of seed and epoch); passes continue into fresh permutations when
    `steps * batch_size` exceeds `n`. `repeats`: float `[n]`, each row's repeat factor (class
    resampling, `TrainConfig.min_draws_per_class`): a pass holds row i floor(r_i) times plus once
    more with probability r_i - floor(r_i) (`guie_nb.data.resampling.resampled_rows`), permuted."""
    rng = np.random.default_rng([seed, epoch])
    need = steps * batch_size
    if repeats is None:
        order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])[:need]
    else:
        passes, have = [], 0
        while have < need:
            passes.append(rng.permutation(resampling.resampled_rows(rng, repeats)))
            have += len(passes[-1])
        order = np.concatenate(passes)[:need]
    return order.reshape(steps, batch_size).astype(np.int32)


def backbone_model(embedding_model: keras.Model, size: int) -> keras.Model:
    """float32 RGB `[B, size, size, 3]` (0..255) -> backbone features `[B, feature_dim]`: the
    embedding model up to the neck (input normalisation, the `visual` ViT), sharing its layers."""
    pixels = keras.Input((size, size, 3), name="image")
    x = embedding_model.get_layer("clip_normalize")(pixels)
    return keras.Model(pixels, embedding_model.get_layer("visual")(x), name="backbone_features")


class NeckHeadModels:
    """The embedding model's neck and the training model's margin head over a features input.

    `training`: `[features float32 [B, D], (original_size [B, 2],) label int32 [B]] -> logits
    [B, classes]`; `neck`: `[features, (original_size)] -> embedding [B, embedding_dim]` (the
    original size with `ModelConfig.size_features`; flip TTA, an inference-time mean over the
    mirrored image, is not part of it: the cache holds the unmirrored features). Both share the
    variables (the layer objects) of `embedding_model` / `training_model`, so training them trains those.
    """

    def __init__(self, model_cfg: ModelConfig, embedding_model: keras.Model, training_model: keras.Model):
        features = keras.Input((model_cfg.vit.feature_dim,), name="features")
        sizes = [keras.Input((2,), name="original_size")] if model_cfg.size_features else []
        label = keras.Input((), dtype="int32", name="label")
        embedding = apply_neck(model_cfg, features, embedding_model, *sizes)
        logits = training_model.get_layer("margin_head")([embedding, label])
        self.with_sizes = bool(sizes)
        self.training = keras.Model([features, *sizes, label], logits, name="neck_head_on_features")
        self.neck = keras.Model([features, *sizes], embedding, name="neck_on_features")

    def inputs(self, features, sizes) -> list:
        """The neck's inputs for these rows: features, and the original sizes when it takes them."""
        return [features, sizes] if self.with_sizes else [features]


class CachedStep:
    """`(carry, frozen, (features, sizes, labels), indices [steps, B]) -> (carry, (losses, accuracies))`:
    one epoch of steps over the cached features in one compiled call.

    `carry` = (trained variables, non-trainable variables: RNG, margins, BN statistics, optimizer
    state). Loss: cross-entropy with label smoothing over the margin head's logits, as
    `trainer.TrainStep`. `compilations` counts traces (one per run).
    """

    def __init__(self, models: NeckHeadModels, trained: list[bool], update, label_smoothing: float):
        self.models, self.model = models, models.training
        self.trained, self.update, self.smoothing = trained, update, label_smoothing
        self.compilations = 0
        self._jitted = jax.jit(self._epoch, donate_argnums=0)

    def merge(self, trained_vals, frozen_vals):
        it_t, it_f = iter(trained_vals), iter(frozen_vals)
        return [next(it_t) if t else next(it_f) for t in self.trained]

    def _step(self, frozen, data, carry, idx):
        trained, non_trainable, opt_state = carry
        features, sizes, labels = data
        x = jnp.take(features, idx, axis=0).astype(jnp.float32)
        y = jnp.take(labels, idx, axis=0)
        inputs = [*self.models.inputs(x, jnp.take(sizes, idx, axis=0)), y]

        def loss_fn(trained):
            logits, nt = self.model.stateless_call(self.merge(trained, frozen), non_trainable, inputs,
                                                   training=True)
            n = logits.shape[-1]
            target = jax.nn.one_hot(y, n) * (1 - self.smoothing) + self.smoothing / n
            loss = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))
            return loss, (logits, nt)

        (loss, (logits, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
        trained, opt_state = self.update(opt_state, grads, trained)
        return (trained, non_trainable, opt_state), (loss, accuracy)

    def _epoch(self, carry, frozen, data, indices):
        self.compilations += 1  # runs only while tracing
        return jax.lax.scan(lambda c, idx: self._step(frozen, data, c, idx), carry, indices)

    def __call__(self, carry, frozen, data, indices):
        return self._jitted(carry, frozen, data, indices)


def _check_labels(cache: FeatureCache, num_classes: int) -> None:
    if len(cache.train_labels) == 0:
        raise ValueError("the feature cache holds no training images")
    lo, hi = int(cache.train_labels.min()), int(cache.train_labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"cached training labels span {lo}..{hi}, outside the manifest's {num_classes} classes: "
                         "the cache belongs to other data; delete it")


def _in_label_ranges(labels: np.ndarray, ranges: list[tuple[int, int]] | None) -> np.ndarray:
    """bool `[N]`: the rows whose label lies in one of `ranges` (`[start, stop)`, TrainConfig.train_sources);
    all rows for None."""
    if ranges is None:
        return np.ones(len(labels), bool)
    return np.any([(labels >= lo) & (labels < hi) for lo, hi in ranges], axis=0)


def _to_host(variables) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in variables]


def neck_sharding() -> NamedSharding:
    """Where the neck + head train: replicated over a mesh of one device per process (the first
    local device of each), so every process runs the same small program on the same data and the
    arrays are global `jax.Array`s that Orbax checkpoints as the trainer's. Single-process: one device."""
    firsts = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        firsts.setdefault(d.process_index, d)
    return NamedSharding(Mesh(np.array(list(firsts.values())), ("process",)), PartitionSpec())


def _put(x, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array placed by `sharding`."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def backbone_embedder(backbone: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """float32 pixels `[B, size, size, 3]` -> features `[B, feature_dim]` on this process's devices.

    Single-process: Keras' `predict_on_batch` under the run's distribution. Multi-process the
    variables live on every host's devices (replicated: `distributed.check_layout` refuses
    model_parallel), and each process embeds only its own shards: its local copy of every
    variable, the batch split over its local devices (`B` must divide by their count, as
    `distribution_for` makes the batch size a multiple of the global replica count).
    """
    if jax.process_count() == 1:
        return backbone.predict_on_batch
    mesh = Mesh(np.array(jax.local_devices()), ("batch",))
    local = NamedSharding(mesh, PartitionSpec())
    tv = [jax.device_put(v.value.addressable_data(0), local) for v in backbone.trainable_variables]
    ntv = [jax.device_put(v.value.addressable_data(0), local) for v in backbone.non_trainable_variables]
    call = jax.jit(lambda tv, ntv, x: backbone.stateless_call(tv, ntv, x, training=False)[0])
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    return lambda pixels: np.asarray(call(tv, ntv, jax.device_put(pixels, rows)))


def _state(carry, frozen, step: int, sharding: NamedSharding) -> dict:
    """The checkpointed train state, named as the trainer's `TrainState` (neck + head only: the
    frozen backbone is fixed by the cache's spec and loaded again on resume)."""
    params, non_trainable, opt_state = carry
    return {"params": params, "frozen": frozen, "non_trainable": non_trainable, "opt_state": opt_state,
            "step": _put(np.int32(step), sharding)}


def _fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, data, init_dir, spec: dict) -> dict:
    """The trainer's resume fingerprint (configs, initial weights, data) plus the feature cache's
    spec (backbone weights, preprocessing, data files), hashed."""
    from guie_nb.training import trainer

    spec_sha = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return {**trainer._fingerprint(model_cfg, train_cfg, data, init_dir), "feature_cache": spec_sha}


def train_cached(data_dir: DataDirs, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 init_dir: str | Path | None = None, stop_after_steps: int | None = None) -> dict:
    """Embed the data once with the frozen backbone (or reuse the cache), train the neck and head on
    the features, write the normal run outputs; returns the metrics (also `metrics.json`).

    `data_dir`, `init_dir`: as `trainer.train`. The cache holds every training image; with
    `train_cfg.train_sources` the neck and head train on the named sources' rows of it.

    Resumable as `trainer.train`: an Orbax checkpoint (`guie_nb.training.checkpoint`, keep-N,
    atomic, async; the same `RunLog` metadata and fingerprint, plus the cache's spec) after every
    epoch, which here is one compiled call of seconds, so `checkpoint_every` does not apply; a rerun
    into `out_dir` continues from the newest complete one and ends with the weights of an
    uninterrupted run (the batches and margins are functions of seed and epoch, the dropout RNG
    state is checkpointed). `stop_after_steps` (a multiple of the steps per epoch, else ValueError)
    ends the run early, its checkpoints kept; returns `{step, total_steps, ...}` then.

    Multi-process (`guie_nb.training.distributed`): each process embeds its share of the cache's
    files (every `process_count`-th, on its own devices), then every process loads the whole cache
    and trains the same neck + head (one device each, `neck_sharding`); process 0 writes the outputs.

    Raises ValueError unless `train_cfg.cached_embeddings` (which needs `freeze_backbone`), or for
    checkpoints of another configuration in `out_dir`; `feature_cache.StaleCacheError` for a cache
    made with another backbone, weights or data; FloatingPointError for a non-finite loss (the last
    good checkpoint is kept).
    """
    from guie_nb.training.trainer import (RunLog, TrainingData, distribution_for, dtype_policy, steps_per_epoch,
                                          write_outputs)

    if not train_cfg.cached_embeddings:
        raise ValueError("train_cached runs only with TrainConfig.cached_embeddings=True")
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"training runs on Keras' JAX backend, not {keras.backend.backend()!r}")
    out_dir = Path(out_dir)
    data = TrainingData.load(data_dir, model_cfg, train_cfg.train_sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = data.num_classes
    keras.utils.set_random_seed(train_cfg.seed)
    distribution = distribution_for(train_cfg)
    with dtype_policy(train_cfg.precision), distribution.scope():
        embedding_model = build_embedding_model(model_cfg)
        training_model = build_training_model(embedding_model, num_classes, model_cfg.head)
    if init_dir is not None:
        load_training_weights(training_model, init_dir, num_classes)
    elif model_cfg.backbone_weights:
        load_backbone_weights(embedding_model, model_cfg.backbone_weights, model_cfg.backbone)

    # 1. embed once (resumable; refused when made with another backbone, weights or data; each
    #    process its share of the files)
    size, mode = model_cfg.input_size, model_cfg.resize_mode
    val, train_files = data.val, data.files
    spec = cache_spec(model_cfg, train_cfg.precision, backbone_fingerprint(embedding_model), train_files,
                      [*val.query_files, *val.index_files])
    t0 = time.time()
    where = cache_dir(out_dir)
    if init_dir is not None and is_complete(cache_dir(init_dir), spec):  # a continuation: same frozen backbone
        where, embedded = cache_dir(init_dir), 0
        print(f"reusing the feature cache of {init_dir} (same backbone, weights and data)")
    else:
        embedded = build_feature_cache(where, spec, backbone_embedder(backbone_model(embedding_model, size)),
                                       train_files, {"queries": val.query_files, "index": val.index_files}, size,
                                       mode, train_cfg.batch_size,
                                       share=(jax.process_index(), jax.process_count()), barrier=distributed.barrier)
        embedded = int(distributed.sum_over_processes(np.array([embedded]))[0])
    embed_seconds = time.time() - t0
    cache = load_feature_cache(where, spec)
    _check_labels(cache, num_classes)

    # 2. the neck + head over features, on one device per process
    models = NeckHeadModels(model_cfg, embedding_model, training_model)
    tv, ntv = models.training.trainable_variables, models.training.non_trainable_variables
    plan = param_groups.plan([v.path for v in tv], train_cfg, model_cfg.vit.layers)
    trained = plan.trained
    rows = np.flatnonzero(_in_label_ranges(cache.train_labels, data.label_ranges))  # train_sources' rows
    n_train = len(rows)
    if n_train == 0:
        raise ValueError(f"the feature cache holds no training images of train_sources {train_cfg.train_sources}")
    repeats = None
    if train_cfg.min_draws_per_class:  # class resampling, from the cached rows' labels (the manifest's counts)
        labels = cache.train_labels[rows]
        per_class = np.bincount(labels, minlength=num_classes)
        repeats = resampling.repeat_factors(per_class, train_cfg.min_draws_per_class)[labels]
        n_epoch = resampling.epoch_images(per_class, train_cfg.min_draws_per_class)
    steps = steps_per_epoch(train_cfg, n_train if repeats is None else n_epoch)
    total_steps = train_cfg.epochs * steps
    if stop_after_steps is not None and stop_after_steps % steps:
        raise ValueError(f"stop_after_steps={stop_after_steps}: the cached path stops at epoch ends, "
                         f"use a multiple of its {steps} steps per epoch")
    init, update, learning_rate = _optimizer(train_cfg, steps, plan)
    step_fn = CachedStep(models, trained, update, train_cfg.label_smoothing)
    on = neck_sharding()
    values = [_put(a, on) for a in _to_host(tv)]
    params = [x for x, t in zip(values, trained) if t]
    frozen = [x for x, t in zip(values, trained) if not t]
    carry = (params, [_put(a, on) for a in _to_host(ntv)], jax.jit(init, out_shardings=on)(params))
    features = (_put(cache.train_features[rows], on), _put(cache.train_sizes[rows], on),
                _put(cache.train_labels[rows], on))
    queries = models.inputs(_put(cache.queries, on), _put(cache.query_sizes, on))
    index = models.inputs(_put(cache.index, on), _put(cache.index_sizes, on))

    neck_paths = ([v.path for v in models.neck.trainable_variables],
                  [v.path for v in models.neck.non_trainable_variables])
    tv_paths, ntv_paths = [v.path for v in tv], [v.path for v in ntv]

    @jax.jit
    def embed(neck_tv, neck_ntv, inputs):
        out, _ = models.neck.stateless_call(neck_tv, neck_ntv, [a.astype(jnp.float32) for a in inputs],
                                            training=False)
        return out

    def evaluate(carry) -> dict[str, float]:
        by_path = {**dict(zip(tv_paths, step_fn.merge(carry[0], frozen))), **dict(zip(ntv_paths, carry[1]))}
        neck_tv, neck_ntv = [by_path[p] for p in neck_paths[0]], [by_path[p] for p in neck_paths[1]]
        return score(val, cache.query_ids, np.asarray(embed(neck_tv, neck_ntv, queries)),
                     cache.index_ids, np.asarray(embed(neck_tv, neck_ntv, index)))

    margin_index = ntv_paths.index("margin_head/margin")
    fingerprint = _fingerprint(model_cfg, train_cfg, data, init_dir, spec)

    with checkpoint.Checkpoints(out_dir, keep=train_cfg.keep_checkpoints) as checkpoints:  # waits for saves on exit
        # 3. restore, or score the starting point
        if checkpoints.latest_step() is not None:
            state, meta = checkpoints.restore(_state(carry, frozen, 0, on))
            if meta["fingerprint"] != fingerprint:
                raise ValueError(f"{checkpoints.directory} holds a run with another configuration; "
                                 "use a new out_dir, or delete the checkpoints to start over")
            step = meta["step"]
            if step % steps:
                raise ValueError(f"{checkpoints.directory} holds a checkpoint at step {step}, inside an epoch of "
                                 f"{steps} steps: not a cached_embeddings run's")
            log = RunLog(meta["initial"], meta["history"], meta["partial"])
            carry, frozen = (state["params"], state["non_trainable"], state["opt_state"]), state["frozen"]
            print(f"resuming from step {step} of {total_steps} ({checkpoint.list_checkpoints(out_dir)[-1].name})")
        else:
            log, step = RunLog(evaluate(carry)), 0
            print(f"{n_train} cached training images, {steps} steps per epoch; before training: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in log.initial.items()))
        resumed_from, first_call_seconds, steady_seconds, steady_steps = step, None, 0.0, 0
        started = time.time()

        # 4. the epoch loop: one compiled call per epoch, a checkpoint after each
        while step < total_steps and (stop_after_steps is None or step < stop_after_steps):
            epoch = step // steps
            margins = data.margins(epoch)
            nt = list(carry[1])
            nt[margin_index] = _put(margins.astype(np.float32), on)
            idx = _put(epoch_indices(train_cfg.seed, epoch, n_train, steps, train_cfg.batch_size, repeats), on)
            t_call = time.time()
            carry, (losses, accs) = step_fn((carry[0], nt, carry[2]), frozen, features, idx)
            losses, accs = np.asarray(losses), np.asarray(accs)
            seconds = time.time() - t_call
            if first_call_seconds is None:
                first_call_seconds = seconds
            else:
                steady_seconds, steady_steps = steady_seconds + seconds, steady_steps + steps
            checkpoint.stop_if_not_finite(losses, step, epoch, checkpoints)
            step += steps
            log.add(losses, accs)
            log.partial["seconds"] += seconds
            scores = evaluate(carry)
            row = log.end_epoch(epoch + 1, step, float(learning_rate(step - 1)), float(np.mean(margins)), scores)
            print(f"epoch {epoch + 1}/{train_cfg.epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.3f} "
                  + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({seconds:.2f} s)")
            checkpoints.save(step, _state(carry, frozen, step, on), log.meta(fingerprint))
        train_seconds = time.time() - started
        if step < total_steps:
            print(f"stopped at step {step} of {total_steps}; rerun to resume")
            return {"step": step, "total_steps": total_steps, "train_step_compilations": step_fn.compilations}

    # 5. the trained values back into the Keras models, and the normal outputs
    for v, x in zip(tv, step_fn.merge(carry[0], frozen)):
        v.assign(np.asarray(x))
    for v, x in zip(ntv, carry[1]):
        v.assign(np.asarray(x))
    final = {k.removeprefix("val_"): v for k, v in log.history[-1].items() if k.startswith("val_")}
    metrics = {
        "initial": log.initial, "final": final, "epochs": train_cfg.epochs, "steps_per_epoch": steps,
        "step": step, "total_steps": total_steps, "resumed_from_step": resumed_from, "train_seconds": train_seconds,
        "first_call_seconds": first_call_seconds,  # this session's first call: it compiles, left out of the rates
        "steps_per_second": steady_steps / steady_seconds if steady_steps and steady_seconds else None,
        "images_per_second": steady_steps * train_cfg.batch_size / steady_seconds
        if steady_steps and steady_seconds else None,
        "train_step_compilations": step_fn.compilations, "backend": keras.backend.backend(),
        "devices": 1, "processes": jax.process_count(), "device_kind": jax.devices()[0].device_kind,
        "layout": train_cfg.layout, "precision": train_cfg.precision, "num_classes": num_classes,
        "cached_embeddings": True, "cached_images": cache.images, "embed_seconds": embed_seconds,
        # images through the backbone: each cached image once, in whichever session (and process) embedded it
        "backbone_forward_passes": cache.images, "backbone_forward_passes_this_run": embedded,
    }
    if distributed.is_writer():  # multi-process: process 0 alone writes the outputs
        write_outputs(out_dir, training_model, embedding_model, model_cfg, train_cfg, log.history, metrics)
    return metrics
