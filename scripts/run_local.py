#!/usr/bin/env python
"""Run the notebook chain locally with papermill: data-prep -> training -> fine-tune -> export -> submit.

Parameters come from a preset (`demo` by default), one run per kernel of its chain (a preset with
training stages runs the fine-tune notebook once per stage; a preset may leave notebooks out);
executed notebooks land in <root>/executed/<kernel>.ipynb.
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
from guie_nb.stages import notebook_of

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", "--profile", dest="preset", default="demo",
                   help=f"one of {presets.available()}")
    p.add_argument("--root", help="where outputs go (default build/<preset>)")
    p.add_argument("--only", nargs="+", metavar="KERNEL",
                   help=f"run only these kernels: notebooks of {list(NOTEBOOK_ORDER)} (every stage of one) "
                        "or kernel keys such as 03_finetune:backbone-280")
    args = p.parse_args(argv)

    import nbformat
    import papermill

    root = args.root or f"build/{args.preset}"
    params = local_params(args.preset, root)  # kernel key -> values; kaggle:// inputs under $GUIE_KAGGLE_INPUT
    unknown = sorted(set(args.only or ()) - set(params) - set(NOTEBOOK_ORDER))
    if unknown:
        p.error(f"--only {unknown}: not a notebook or a kernel of preset {args.preset!r} ({list(params)})")
    built = {path.stem: path for path in build_all(REPO / "notebooks", REPO / "build" / "notebooks")}
    use_for_papermill()
    executed = REPO / root / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    for key, values in params.items():  # chain order: each stage after the one whose output it reads
        name = notebook_of(key)
        if args.only and key not in args.only and name not in args.only:
            continue
        nb_path = built[name]
        check_parameters(nbformat.read(nb_path, as_version=4), values, key)
        out = executed / f"{key.replace(':', '-')}.ipynb"
        print(f"== {key} -> {out}", flush=True)
        start = time.time()
        try:
            papermill.execute_notebook(str(nb_path), str(out), parameters=values, cwd=str(REPO),
                                       kernel_name="python3", progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            print(f"\n{key} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                  f"see the executed notebook: {out}", file=sys.stderr)
            return 1
        print(f"   done in {time.time() - start:.0f} s", flush=True)
    report = REPO / root / "report.json"
    if report.is_file():
        print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
