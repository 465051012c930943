"""Multi-host training: one JAX process per host, as on a TPU pod slice (v5e-16 and up).

A single host (Kaggle's TPU v5e-8, a GPU box, the CPU) is one process and needs none of this:
every function here is then the plain single-process operation. On a pod slice the same notebook
runs on every host; JAX joins the processes into one set of global devices
(`jax.distributed.initialize`), the train step is one SPMD program over all of them, and each
process feeds only its own devices:

- data: every process builds the same global stream of examples (same files, shuffle and
  per-example augmentation seeds: `guie_nb.data.pipeline.train_dataset`) but decodes and augments
  only its rows of each global batch (`process_rows`), which `global_batch` assembles into one
  `jax.Array` (`jax.make_array_from_process_local_data`). The global batch sequence is therefore
  the same whatever the process count: 2 processes x 4 devices train exactly as 1 process x 8.
- evaluation: each process embeds its rows of each validation batch; the embeddings are gathered
  to every process (`process_allgather`), so every process computes the same scores.
- outputs: only process 0 writes (`is_writer`); arrays sharded over several hosts are gathered
  first (`to_host`, a collective: every process calls it).

The output and data folders must be the same path on every host (a shared file system or a
GCS bucket mounted with gcsfuse), as for Orbax checkpoints: every process reads the data and the
checkpoint it resumes from.

How a run is told it is multi-process (read by `initialize`, environment variables):

- `GUIE_DISTRIBUTED=auto`: JAX detects the cluster itself (Cloud TPU pod slice, Slurm, Open MPI;
  `jax.distributed.initialize()` with no arguments).
- `GUIE_COORDINATOR=host:port`, `GUIE_NUM_PROCESSES=n`, `GUIE_PROCESS_ID=i`: explicit (CPU or GPU
  clusters, and the local tests): process 0 listens on `port` of `host`, every process names it.
- neither: a single-process run; nothing is initialised.

On the CPU, cross-process collectives use gloo (`jax_cpu_collectives_implementation`, whose
default is "gloo" in this JAX, 0.10).

Reference: JAX's "Multi-host and multi-process environments" guide
(https://docs.jax.dev/en/latest/multi_process.html).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec, Sharding

ENV_MODE = "GUIE_DISTRIBUTED"
ENV_COORDINATOR = "GUIE_COORDINATOR"
ENV_NUM_PROCESSES = "GUIE_NUM_PROCESSES"
ENV_PROCESS_ID = "GUIE_PROCESS_ID"
_EXPLICIT = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)

T = TypeVar("T")


def initialize_args(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The arguments for `jax.distributed.initialize` that `env` (default `os.environ`) asks for.

    None: a single-process run. `{}`: `GUIE_DISTRIBUTED=auto` (JAX detects the cluster).
    Otherwise `{"coordinator_address", "num_processes", "process_id"}` from the three explicit
    variables. ValueError for an unknown `GUIE_DISTRIBUTED`, some but not all of the explicit
    variables, a non-integer count or id, or an id outside `0 .. num_processes - 1`.
    """
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "").strip().lower()
    given = {k: env[k].strip() for k in _EXPLICIT if env.get(k, "").strip()}
    if mode not in ("", "auto"):
        raise ValueError(f"{ENV_MODE}={env[ENV_MODE]!r}: the only value is 'auto' (JAX detects the cluster); "
                         f"or set {', '.join(_EXPLICIT)} for an explicit multi-process run")
    if mode == "auto":
        if given:
            raise ValueError(f"{ENV_MODE}=auto and {sorted(given)} are both set: choose one")
        return {}
    if not given:
        return None
    missing = [k for k in _EXPLICIT if k not in given]
    if missing:
        raise ValueError(f"a multi-process run needs all of {', '.join(_EXPLICIT)}; missing {', '.join(missing)}")
    try:
        count, index = int(given[ENV_NUM_PROCESSES]), int(given[ENV_PROCESS_ID])
    except ValueError:
        raise ValueError(f"{ENV_NUM_PROCESSES}={given[ENV_NUM_PROCESSES]!r} and {ENV_PROCESS_ID}="
                         f"{given[ENV_PROCESS_ID]!r} must be integers") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{ENV_PROCESS_ID}={index} is not in 0..{count - 1} ({ENV_NUM_PROCESSES}={count})")
    if ":" not in given[ENV_COORDINATOR]:
        raise ValueError(f"{ENV_COORDINATOR}={given[ENV_COORDINATOR]!r} must be host:port of process 0")
    return {"coordinator_address": given[ENV_COORDINATOR], "num_processes": count, "process_id": index}


def initialize(env: Mapping[str, str] | None = None) -> bool:
    """Join this process to a multi-process run when `env` says it is one (see `initialize_args`).

    Call it before anything touches a JAX device (`jax.devices()`, building a Keras model): JAX
    fixes the device set when its backend starts. Returns True when the distributed runtime is
    running (now or from an earlier call), False for a single-process run. RuntimeError (JAX's)
    when the backend already started: restart the kernel and call this first. ValueError for
    inconsistent variables (`initialize_args`).
    """
    args = initialize_args(env)
    if args is None:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize(**args)  # RuntimeError when a JAX backend already started
    return True


def is_writer() -> bool:
    """True in the one process that writes the run's outputs (process 0; always, single-process)."""
    return jax.process_index() == 0


def check_layout(layout: str) -> None:
    """ValueError for a layout that a multi-process run cannot finish with.

    "model_parallel" shards the weights over the mesh's batch axis, which spans the hosts; the
    checkpoints gather them (`to_host`), but Keras writes `.h5` weights by reading every variable
    on process 0, which holds only its hosts' shards. "data_parallel" keeps a whole replica on
    every chip and works on any number of processes.
    """
    if jax.process_count() > 1 and layout == "model_parallel":
        raise ValueError(f"layout='model_parallel' is not supported over {jax.process_count()} processes (the "
                         "final Keras .h5 weights need every weight on process 0); use layout='data_parallel'")


def process_files(files: Sequence[T]) -> list[T]:
    """This process's share of `files`: every `process_count`-th one starting at its index.

    Deterministic (the order of `files`), and every file goes to exactly one process. For reads
    whose result is then combined over processes (`sum_over_processes`), e.g. label counts.
    ValueError when there are fewer files than processes (a process would read nothing).
    """
    count, index = jax.process_count(), jax.process_index()
    if len(files) < count:
        raise ValueError(f"{len(files)} files for {count} processes: each process needs at least one; "
                         "write more, smaller shards in data-prep (images_per_shard)")
    return list(files[index::count])


def barrier(name: str) -> None:
    """Wait until every process reaches `barrier(name)` (a collective; nothing single-process): e.g.
    files one process writes, read by the others after it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def sum_over_processes(x: np.ndarray) -> np.ndarray:
    """The element-wise sum of `x` over all processes (same shape and dtype in each); a collective."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0).astype(x.dtype)


def process_rows(sharding: Sharding, global_shape: tuple[int, ...], axis: int) -> slice:
    """The rows `start:stop` along `axis` of an array of `global_shape`, placed by `sharding`, that
    live on this process's devices: the part of each global batch this process must supply.

    ValueError when they are not one contiguous block (a mesh whose devices do not group by
    process along `axis`), which `jax.make_array_from_process_local_data` could not assemble.
    """
    spans = sorted({_span(idx[axis], global_shape[axis])
                    for idx in sharding.addressable_devices_indices_map(global_shape).values()})
    start, stop = spans[0][0], spans[0][1]
    for a, b in spans[1:]:
        if a > stop:
            raise ValueError(f"this process's devices hold rows {spans} of axis {axis}: not one block")
        stop = max(stop, b)
    return slice(start, stop)


def _span(index: slice, size: int) -> tuple[int, int]:
    start, stop, _ = index.indices(size)
    return start, stop


def global_batch(local: Any, sharding: Sharding) -> Any:
    """A pytree of this process's numpy rows (`process_rows`) -> global `jax.Array`s placed by `sharding`.

    Single-process, `local` is the whole batch and this is `jax.device_put`. Multi-process, each
    leaf `[..., rows, ...]` becomes `[..., rows * process_count, ...]` (the global batch): every
    process calls it with its own rows, in the same step.
    """
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
    """The whole value of `x` as numpy, on every process. A collective when `x` is sharded over
    several processes (gathered with `process_allgather`): then every process must call it."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def embed_sharded(embed: Callable[[jax.Array], jax.Array], images: np.ndarray, mesh, batch_axis: str) -> np.ndarray:
    """`embed` (a jitted function of a global `[B, ...]` batch) over the whole `images` `[n, ...]`,
    each process computing its rows: returns all `[n, d]` embeddings on every process.

    Every process passes the same `images` (the validation batch); they are padded with copies of
    the last image to a multiple of the device count, then cut back to `n`.
    """
    n = len(images)
    devices = mesh.size
    padded = -(-n // devices) * devices
    if padded != n:
        images = np.concatenate([images, np.repeat(images[-1:], padded - n, axis=0)])
    sharding = NamedSharding(mesh, PartitionSpec(batch_axis))
    rows = process_rows(sharding, images.shape, axis=0)
    out = embed(global_batch(images[rows], sharding))
    return to_host(out)[:n]


def evaluate_keras(embedding_model, val, size: int, resize_mode: str, distribution, batch_size: int = 64) -> dict:
    """`guie_nb.evaluation.evaluate_keras`, multi-process: the same scores on every process.

    Single-process it is that function. Multi-process, Keras' `predict_on_batch` cannot return
    an array that lives on other hosts, so each process embeds its rows of every validation batch
    (`embed_sharded`, the model's `stateless_call` under `jax.jit`) and the embeddings are gathered
    to every process before scoring. `distribution`: the run's `keras.distribution` (its mesh and
    batch axis).
    """
    from guie_nb import evaluation
    from guie_nb.data.pipeline import eval_dataset

    if jax.process_count() == 1:
        return evaluation.evaluate_keras(embedding_model, val, size, resize_mode, batch_size)
    mesh = distribution.device_mesh.backend_mesh
    trainable = [v.value for v in embedding_model.trainable_variables]
    non_trainable = [v.value for v in embedding_model.non_trainable_variables]
    # the variables are arguments, not closed-over constants: they span other hosts' devices
    call = jax.jit(lambda tv, ntv, x: embedding_model.stateless_call(tv, ntv, x, training=False)[0])

    def embed(batch: np.ndarray) -> np.ndarray:
        return embed_sharded(lambda x: call(trainable, non_trainable, x), batch, mesh, distribution.batch_dim_name)

    q_ids, q = evaluation.embed_with(embed, eval_dataset(val.query_files, size, resize_mode, batch_size))
    i_ids, i = evaluation.embed_with(embed, eval_dataset(val.index_files, size, resize_mode, batch_size))
    return evaluation.score(val, q_ids, q, i_ids, i)
