"""Run a snippet of Python in a fresh process on a chosen Keras backend (one backend per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def run_on_backend(backend: str, code: str, timeout: int = 600) -> dict:
    """Run `code` with KERAS_BACKEND=backend; the code prints one JSON line last, returned here."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    prelude = "import guie_nb\n"  # before TensorFlow, see conftest.py
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{backend} subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
