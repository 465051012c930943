#!/usr/bin/env python
"""Kaggle: `python -m guie_nb.kaggle submit` (see docs/kaggle.md and `--help`)."""

import sys

import guie_nb  # noqa: F401  (first: import order, see guie_nb/__init__.py)
from guie_nb.kaggle.cli import main

if __name__ == "__main__":
    sys.exit(main(["submit", *sys.argv[1:]]))
