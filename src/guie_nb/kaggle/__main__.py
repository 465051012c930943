"""`python -m guie_nb.kaggle {stage,push,status,output,submit}` (see guie_nb.kaggle.cli)."""

import sys

import guie_nb  # noqa: F401  (first: import order, see guie_nb/__init__.py)
from guie_nb.kaggle.cli import main

sys.exit(main())
