"""guie-nb: helpers shared by the data-prep, training, fine-tune and export notebooks."""

from __future__ import annotations

# torch's triton extension segfaults when it is loaded after TensorFlow (both bundle LLVM).
# Loading it first, while nothing else is loaded, is cheap (0.3 s) and makes every import
# order of tensorflow / torch / open_clip safe for code that imports guie_nb first.
try:  # pragma: no cover - depends on the installed torch build
    import triton  # noqa: F401
except Exception:
    pass

__version__ = "0.1.0"
