"""`import guie_nb` is cheap, and still loads triton before TensorFlow (see guie_nb/__init__.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="this torch build has no triton")
def test_triton_loads_only_when_tensorflow_is_looked_up():
    out = _run("import sys, importlib.util, guie_nb\n"
               "print('triton' in sys.modules)\n"
               "importlib.util.find_spec('tensorflow')  # what `import tensorflow` does first\n"
               "print('triton' in sys.modules, 'tensorflow' in sys.modules)\n"
               "importlib.util.find_spec('tensorflow')\n"
               "print(sum(type(f).__name__ == '_TritonBeforeTensorFlow' for f in sys.meta_path))\n")
    assert out.split() == ["False", "True", "False", "0"]  # once, then the hook is gone
