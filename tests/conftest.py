"""Test-wide setup.

guie_nb is imported before anything else: importing TensorFlow before torch/open_clip crashes
the process (triton's and TensorFlow's LLVM clash), and guie_nb loads triton first to avoid it.
Unit tests run Keras on the JAX backend, the backend the notebooks train on, on the CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Unit tests run on the CPU. With libtpu installed (for xla_memory's TPU compiles) JAX would also try to
# start a TPU at every start-up, printing errors on machines without one; the topology route needs no TPU backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import guie_nb  # noqa: E402,F401  (import order matters, see above)


def pytest_collection_modifyitems(session, config, items):
    """Run the notebooks (nbmake items) first, in chain order, and the checks on their outputs
    right after, so the demo chain's results exist before they are inspected."""

    def rank(item):
        path = str(item.fspath)
        if path.endswith(".ipynb"):
            return (0, os.path.basename(path))
        if "test_demo_outputs" in path:
            return (1, "")
        return (2, "")

    items.sort(key=rank)  # stable: test order inside each group is kept
