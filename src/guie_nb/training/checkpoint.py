"""Checkpoints in `out_dir/checkpoints/` (guie_nb.run_dir) with Orbax: the train state (every
variable incl. the dropout RNG state and margins, the optimizer state, the step) and, beside it,
JSON metadata (configuration fingerprint, history, the epoch's partial sums, initial scores).

- Sharded: each device's shard of each array is written by its process (Orbax's OCDBT format), so a
  ViT-H checkpoint is never gathered on one host; on restore each array lands in the layout its
  target asks for, on any device count or mesh.
- Asynchronous: `save` returns once the arrays are copied to host memory; the files are written
  in the background while training goes on. `wait` (and leaving the `Checkpoints` context) blocks
  until they are complete.
- Atomic: Orbax writes into a temporary folder and renames it when complete (on object stores, a
  commit marker); a save cut off by the end of a session is never listed, restored or counted.
- Keep-N: only the newest `keep` complete checkpoints stay.

Layout: `checkpoints/ckpt_<step, 9 digits>/{state, meta}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from guie_nb.run_dir import checkpoint_dir

_PREFIX, _DIGITS = "ckpt", 9


def _options(keep: int | None, read_only: bool = False) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(max_to_keep=keep, step_prefix=_PREFIX, step_format_fixed_length=_DIGITS,
                                        cleanup_tmp_directories=not read_only, enable_async_checkpointing=True,
                                        create=not read_only, read_only=read_only)


class Checkpoints:
    """The checkpoints of one run folder. Use as a context manager: leaving it (normally or by an
    exception) waits for pending saves and closes the writer threads."""

    def __init__(self, out_dir: str | Path, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.run_dir = Path(out_dir)
        self.directory = checkpoint_dir(out_dir).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=_options(keep))

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, step: int, state: Any, meta: dict) -> Path:
        """Start writing `state` (a pytree of jax arrays) and `meta` (JSON-able) as step `step`;
        returns the folder it will have once complete. Returns after the device-to-host copy, so
        the caller may donate or overwrite `state`'s arrays right away."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave({**meta, "step": step})))
        return self.directory / _step_name(step)

    def wait(self) -> None:
        """Block until every save started so far is complete (written, renamed, old ones pruned)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """`(state, meta)` of `step` (default: the newest complete one).

        `target`: a pytree like the saved state whose leaves are arrays or `jax.ShapeDtypeStruct`s
        with a `sharding`; each array is restored with the target's shape, dtype and sharding (any
        mesh or device count). Raises FileNotFoundError when there is no complete checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        got = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                  meta=ocp.args.JsonRestore()))
        return got.state, got.meta


def _step_name(step: int) -> str:
    return f"{_PREFIX}_{step:0{_DIGITS}d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The complete checkpoints' folders, oldest first (a save still being written is not listed)."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    found = ocp.step.standard_name_format(step_prefix=_PREFIX, step_format_fixed_length=_DIGITS).find_all(epath.Path(d))
    return [Path(m.path) for m in sorted(found, key=lambda m: m.step)]


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of the checkpoint folder `path` (history, step, fingerprint, ...)."""
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(Path(path).absolute() / "meta")


def load(path: str | Path) -> tuple[dict, dict]:
    """`(state, meta)` of the checkpoint folder `path`, every array as a host numpy array (for
    inspection and tests; training restores onto devices with `Checkpoints.restore`). `state` is
    the saved pytree as nested dicts/lists: `params`, `frozen`, `non_trainable`, `opt_state`, `step`."""
    item = Path(path).absolute() / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(item).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return state, read_meta(path)


def stop_if_not_finite(losses: np.ndarray, step: int, epoch: int, checkpoints: Checkpoints) -> None:
    """Raise FloatingPointError naming the first bad step and the last good (complete) checkpoint.

    `losses`: float `[steps]` of the epoch's steps from global step `step`; `epoch` 0-based. Shared by
    the on-the-fly trainer and the cached-embeddings trainer."""
    if np.all(np.isfinite(losses)):
        return
    checkpoints.wait()  # the last good checkpoint is complete before it is named
    bad = step + int(np.argmin(np.isfinite(losses)))
    last = list_checkpoints(checkpoints.run_dir)
    raise FloatingPointError(
        f"training loss became non-finite at step {bad} (epoch {epoch + 1}): {losses.tolist()}. "
        f"Stopped; the last good checkpoint is kept ({last[-1] if last else 'none written yet'}). "
        "Lower learning_rate, set grad_clip_norm, or check the data.")
