"""guie-nb: helpers shared by the data-prep, training, fine-tune and export notebooks."""

from __future__ import annotations

import sys


class _TritonBeforeTensorFlow:
    """Loads torch's triton extension just before TensorFlow is first imported (or looked up).

    Why: triton segfaults when it is loaded after TensorFlow (both bundle LLVM); loaded first, every
    later import order of tensorflow / torch / open_clip is safe. Doing it here, on demand, spares
    the 0.3 s it costs to every process that never imports TensorFlow (data-prep workers, CLIs).
    A meta path finder (PEP 451) that finds nothing: it only acts, once, before the real finders.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            _remove_hook()
            try:  # pragma: no cover - depends on the installed torch build
                import triton  # noqa: F401
            except Exception:
                pass
        return None  # the regular finders import tensorflow itself


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TritonBeforeTensorFlow)]


if "tensorflow" not in sys.modules and not any(isinstance(f, _TritonBeforeTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, _TritonBeforeTensorFlow())

__version__ = "0.1.0"
