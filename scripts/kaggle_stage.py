#!/usr/bin/env python
"""Kaggle: stage and validate the helper dataset and the four kernels; no network, no credentials.

Same as `scripts/kaggle_push.py --dry-run`.
"""

import sys

import guie_nb  # noqa: F401
from guie_nb.kaggle.cli import push_main

if __name__ == "__main__":
    sys.exit(push_main([*sys.argv[1:], "--dry-run"]))
