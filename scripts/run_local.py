#!/usr/bin/env python
"""Run the notebook chain locally with papermill: data-prep -> training -> fine-tune -> export -> submit
(the notebooks the preset gives parameters for: a zero-shot preset has no training).

Parameters come from a preset (`demo` by default); executed notebooks land in <root>/executed/.
papermill injects them with the serializer Kaggle staging bakes them with, so both runs of one
preset see the same values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from guie_nb import presets
from guie_nb.kaggle.layout import local_params
from guie_nb.notebook_build import NOTEBOOK_ORDER, build_all, check_parameters, use_for_papermill

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", "--profile", dest="preset", default="demo",
                   help=f"one of {presets.available()}")
    p.add_argument("--root", help="where outputs go (default build/<preset>)")
    p.add_argument("--only", nargs="+", choices=NOTEBOOK_ORDER, help="run only these notebooks")
    args = p.parse_args(argv)

    import nbformat
    import papermill

    root = args.root or f"build/{args.preset}"
    params = local_params(args.preset, root)  # kaggle:// inputs under $GUIE_KAGGLE_INPUT
    built = build_all(REPO / "notebooks", REPO / "build" / "notebooks")
    use_for_papermill()
    executed = REPO / root / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    for nb_path in built:
        name = nb_path.stem
        if args.only and name not in args.only:
            continue
        if name not in params:  # a preset without training (zero-shot) omits 02 and 03
            print(f"== {name}: not in preset {args.preset!r}, skipped", flush=True)
            continue
        check_parameters(nbformat.read(nb_path, as_version=4), params[name], name)
        out = executed / nb_path.name
        print(f"== {name} -> {out}", flush=True)
        start = time.time()
        try:
            papermill.execute_notebook(str(nb_path), str(out), parameters=params[name], cwd=str(REPO),
                                       kernel_name="python3", progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            print(f"\n{name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                  f"see the executed notebook: {out}", file=sys.stderr)
            return 1
        print(f"   done in {time.time() - start:.0f} s", flush=True)
    report = REPO / root / "report.json"
    if report.is_file():
        print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
