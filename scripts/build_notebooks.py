#!/usr/bin/env python
"""Build build/notebooks/*.ipynb from notebooks/*.py (reproducible bytes, kernelspec set).

With --preset, the preset's values are baked into each `parameters` cell (as Kaggle needs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guie_nb import presets
from guie_nb.notebook_build import build_all

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(REPO / "build" / "notebooks"))
    p.add_argument("--preset", help=f"bake a preset's parameters: {presets.available()}")
    p.add_argument("--root", help="output root the baked parameters point at (default build/<preset>)")
    args = p.parse_args(argv)
    params = presets.notebook_params(args.preset, args.root) if args.preset else None
    for path in build_all(REPO / "notebooks", args.out, params):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
