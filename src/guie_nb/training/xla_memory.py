"""The training step's memory per TPU chip, as XLA's TPU compiler allocates it, on a machine without a TPU.

JAX can compile ahead of time for a TPU topology it only describes
(`jax.experimental.topologies.get_topology_desc("v5e:2x4", platform="tpu")` needs the `libtpu`
wheel, not a TPU). The real `TrainStep` (built by `trainer.build_step`, the same code `train` runs)
is lowered with abstract inputs, `jax.ShapeDtypeStruct`s carrying the shardings the trainer would
give them on that topology, and compiled; `compiled.memory_analysis()` then gives the bytes per
chip. Nothing of model size is allocated on the host: the Keras models are built inside a
`keras.StatelessScope(initialize_variables=False)`, so their variables keep only shape, dtype and
initializer (Keras' deferred initialisation), and the step never sees a real array.

Emulated CPU devices are no proxy for this: CPU XLA schedules and fuses differently (a ViT-H-14
FSDP step that needs 10.4 GiB per v5e chip takes 23.8 GiB per emulated CPU device).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
from dataclasses import asdict, dataclass

import jax
import keras

from guie_nb.data.pipeline import train_dataset
from guie_nb.model.embedding import ModelConfig
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import StepSetup, batch_sharding, build_step

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_TOPOLOGY = "v5e:2x4"  # Kaggle's TPU v5e-8: 8 chips, 16 GiB HBM each
_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class TopologyUnavailable(RuntimeError):
    """No TPU compiler here (libtpu missing or too old/new for this jax), or an unknown topology name."""


@dataclass
class XlaMemory:
    """Bytes per chip of one compiled training call (all its `steps_per_execution` steps).

    From XLA's buffer assignment (`Compiled.memory_analysis()`): arguments (state, frozen weights,
    batches), outputs (the new state, which reuses the donated old one: `alias_bytes`), temporaries
    (activations, gradients, collectives' buffers) and the program's code. `peak_bytes` is XLA's
    own peak of live buffers. When XLA refuses the program (RESOURCE_EXHAUSTED), `fits` is False,
    the figures come from its message (`temp_bytes` = program's need, other fields 0 unless it
    names them) and `message` holds it.
    """

    topology: str
    device_kind: str
    devices: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    generated_code_bytes: int
    peak_bytes: int
    capacity_bytes: int | None  # HBM per chip usable by programs, as XLA reports it (None: not found)
    compile_seconds: float
    fits: bool | None  # peak <= capacity; None when the capacity is unknown
    message: str = ""

    @property
    def total_bytes(self) -> int:
        """arguments + outputs + temporaries + code - what outputs share with donated arguments."""
        return (self.argument_bytes + self.output_bytes + self.temp_bytes + self.generated_code_bytes
                - self.alias_bytes)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "peak_gib": round(self.peak_gib, 3),
                "total_gib": round(self.total_gib, 3)}

    def summary(self) -> str:
        cap = f" of {self.capacity_bytes / GIB:.2f}" if self.capacity_bytes else ""
        if self.message:  # refused: XLA names only what broke the limit
            return (f"XLA {self.device_kind} x{self.devices} ({self.topology}): does NOT fit, needs at least "
                    f"{self.peak_gib:.2f}{cap} GiB per chip (XLA: {self.message.strip().splitlines()[0]})")
        verdict = {True: "fits", False: "does NOT fit", None: "capacity unknown"}[self.fits]
        return (f"XLA {self.device_kind} x{self.devices} ({self.topology}): peak {self.peak_gib:.2f}{cap} GiB "
                f"per chip, {verdict} [GiB: arguments {self.argument_bytes / GIB:.2f}, temporaries "
                f"{self.temp_bytes / GIB:.2f}, outputs {self.output_bytes / GIB:.2f} (aliased "
                f"{self.alias_bytes / GIB:.2f}), code {self.generated_code_bytes / GIB:.3f}]; "
                f"compiled in {self.compile_seconds:.0f} s")


def topology_devices(topology: str = DEFAULT_TOPOLOGY) -> list:
    """The compile-only devices of a TPU `topology` (e.g. "v5e:2x4"); TopologyUnavailable if none.

    libtpu reads TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES when its plugin starts and prints
    errors to stderr when they are unset, as on any machine that is not a Cloud TPU VM, and it
    takes /tmp/libtpu_lockfile, so a second process using libtpu at the same time fails. Here the
    topology is named explicitly and no chip is driven, so the names get neutral values and
    ALLOW_MULTIPLE_LIBTPU_LOAD skips the lock, for that start only (a real TPU VM has started the
    plugin, with its own settings, by the time `jax.devices()` returns).
    """
    from jax.experimental import topologies

    jax.devices()  # local backends first: the variables below then reach only libtpu's compile-only start
    quiet = {"TPU_ACCELERATOR_TYPE": "v5litepod-8", "TPU_WORKER_HOSTNAMES": "localhost",
             "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    added = {k: v for k, v in quiet.items() if k not in os.environ}
    os.environ.update(added)
    try:
        desc = topologies.get_topology_desc(topology, platform="tpu")
    except Exception as e:  # RuntimeError (no libtpu), JaxRuntimeError (bad name, plugin mismatch)
        raise TopologyUnavailable(f"cannot describe TPU topology {topology!r}: {type(e).__name__}: {e}. "
                                  "AOT compilation for TPU needs the libtpu wheel that matches this jax "
                                  "(requirements.txt)") from e
    finally:
        for k in added:
            os.environ.pop(k, None)
    return list(desc.devices)


def unavailable_reason(topology: str = DEFAULT_TOPOLOGY) -> str | None:
    """None when this machine can compile for `topology`, else why not (what a report shows beside null)."""
    try:
        topology_devices(topology)
    except TopologyUnavailable as e:
        return str(e)
    return None


@contextlib.contextmanager
def abstract_variables():
    """Keras variables created inside stay uninitialised (shape, dtype and initializer only).

    Keras registers such variables for a later `_deferred_initialize`, which the next outermost
    StatelessScope to close would run (allocating the weights); they are taken off that list on
    exit, so the abstract model never materialises.
    """
    from keras.src.backend.common import global_state  # Keras' deferred-initialisation list (no public API)

    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute(key, before)


def abstract_inputs(setup: StepSetup, model_cfg: ModelConfig, train_cfg: TrainConfig):
    """`(state, batches)` for `setup.step` as `jax.ShapeDtypeStruct`s placed as `train` places them.

    State: `StepSetup.abstract_state` (each variable where `setup.distribution` lays it out, the
    optimizer's moments beside their parameter); batches: `train_dataset`'s element spec (a graph
    only, no file is read) split by `trainer.batch_sharding`.
    """
    element_spec = train_dataset(["abstract.tfrecord"], model_cfg.input_size, train_cfg.batch_size,
                                 steps_per_execution=train_cfg.steps_per_execution,
                                 original_size=model_cfg.size_features).element_spec
    placed = batch_sharding(setup.distribution)
    batches = jax.tree.map(lambda s: jax.ShapeDtypeStruct(tuple(s.shape), s.dtype.as_numpy_dtype, sharding=placed),
                           element_spec)
    return setup.abstract_state(), batches


def _bytes(text: str) -> int:
    m = re.fullmatch(r"([\d.]+)\s*([BKMGT])i?B?", text.strip())
    if not m:
        raise ValueError(f"not a byte size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


# XLA:TPU's out-of-memory messages, newer and older: "...required for HLO temporaries (64.00G) exceeds
# available HBM (15.75G)" and "Used 15.80G of 15.75G hbm"
_EXHAUSTED = (re.compile(r"\(([\d.]+[BKMGT])\)\s+exceeds available HBM\s+\(([\d.]+[BKMGT])\)"),
              re.compile(r"Used\s+([\d.]+[BKMGT])\s+of\s+([\d.]+[BKMGT])\s+hbm"))


def parse_resource_exhausted(message: str) -> tuple[int, int] | None:
    """(bytes the program needs, bytes of HBM available) from XLA:TPU's RESOURCE_EXHAUSTED text, or None.

    XLA prints sizes in binary units to two decimals ("15.75G" = 15.75 GiB), so these are within
    0.005 GiB of its exact figures.
    """
    for pattern in _EXHAUSTED:
        m = pattern.search(message)
        if m:
            return _bytes(m.group(1)), _bytes(m.group(2))
    return None


@functools.lru_cache(maxsize=None)
def hbm_capacity(topology: str = DEFAULT_TOPOLOGY) -> int | None:
    """Bytes of HBM per chip that XLA lets a program use on `topology` (15.75 GiB on v5e), or None.

    Compile-only devices report no memory statistics, so this asks the compiler: a program whose
    output cannot fit any chip (16 TiB) is refused with the available figure in the message.
    """
    import jax.numpy as jnp
    import numpy as np

    device = topology_devices(topology)[0]
    one = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array([device]), ("x",)), jax.sharding.PartitionSpec())
    try:
        jax.jit(lambda: jnp.zeros((2**44,), jnp.int8), out_shardings=one).lower().compile()
    except Exception as e:  # RESOURCE_EXHAUSTED is the expected answer
        found = parse_resource_exhausted(str(e))
        if found:
            return found[1]
        log.warning("no HBM capacity in XLA's answer for %s: %s", topology, e)
    return None


def compiled_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, num_classes: int,
                    topology: str = DEFAULT_TOPOLOGY) -> XlaMemory | None:
    """XLA's bytes per chip for one training call of `model_cfg` / `train_cfg` on TPU `topology`.

    Builds the step through `trainer.build_step` on the topology's devices (layout, batch and
    precision as in `train_cfg`; the learning-rate schedule's length does not change the program),
    lowers it with abstract inputs and compiles it for the TPU; takes minutes for ViT-H-14 on CPU.
    Returns None, with the reason logged as a warning, when the TPU compiler is unavailable here
    (`unavailable_reason` gives that reason as text).
    A program that does not fit comes back with `fits=False` and XLA's figures, not an error.
    Raises what the trainer raises for a bad configuration (e.g. a batch the mesh cannot split).
    """
    try:
        devices = topology_devices(topology)
    except TopologyUnavailable as e:
        log.warning("no XLA memory figure: %s", e)
        return None
    with abstract_variables():
        setup = build_step(model_cfg, train_cfg, num_classes, steps=1000, devices=devices)
        state, batches = abstract_inputs(setup, model_cfg, train_cfg)
        lowered = setup.step.lower(state, batches)
    head = dict(topology=topology, device_kind=devices[0].device_kind, devices=len(devices))
    started = time.time()
    try:
        compiled = lowered.compile()
    except Exception as e:  # XlaRuntimeError; only RESOURCE_EXHAUSTED is a result
        message = str(e)
        need = parse_resource_exhausted(message) if "RESOURCE_EXHAUSTED" in message else None
        if need is None:
            raise
        return XlaMemory(**head, argument_bytes=0, output_bytes=0, alias_bytes=0, temp_bytes=need[0],
                         generated_code_bytes=0, peak_bytes=need[0], capacity_bytes=need[1],
                         compile_seconds=time.time() - started, fits=False, message=message)
    seconds = time.time() - started
    stats = compiled.memory_analysis()
    capacity = hbm_capacity(topology)
    peak = int(stats.peak_memory_in_bytes)
    return XlaMemory(**head, argument_bytes=int(stats.argument_size_in_bytes),
                     output_bytes=int(stats.output_size_in_bytes), alias_bytes=int(stats.alias_size_in_bytes),
                     temp_bytes=int(stats.temp_size_in_bytes),
                     generated_code_bytes=int(stats.generated_code_size_in_bytes), peak_bytes=peak,
                     capacity_bytes=capacity, compile_seconds=seconds,
                     fits=None if capacity is None else peak <= capacity)
