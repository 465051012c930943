# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5 · Submit: the verified `submission.zip`, from a kernel that runs offline
#
# The competition runs a submitted notebook with **internet off**. The export notebook (04) needs
# internet to create the scorer's runtimes (Python 3.9 with TF 2.6.4 / PyTorch 1.11) in which it
# verifies the zip, so its output cannot be submitted. This notebook, internet off, mounts the
# export's output, checks `submission.zip` against the export's `verification.json` (verification
# passed, a format the scorer takes, the same sha256 and size, a readable zip) and copies it to its
# own output with `submit_report.json`. `make submit` submits this kernel's version.

# %% [markdown]
# The helper package `guie_nb`: on Kaggle it comes from the helper dataset attached to this
# kernel (under `/kaggle/input`), locally from the installed package. Same source in both places.
# A staged kernel stops here when the attached package is not the one it was staged with, and
# writes its run id to `guie_run.json`, so the chain can tell this run's output from an older one.

# %%
import os
import sys
from pathlib import Path

STAGED = {}  # baked at staging: run id, helper-package hash (empty for a local run)
_inputs = Path(os.environ.get("GUIE_KAGGLE_INPUT", "/kaggle/input"))  # tests move it
_helpers = [*_inputs.glob("guie-nb-helpers/guie_nb"), *_inputs.glob("*/*/guie-nb-helpers/guie_nb")]
if _helpers:
    sys.path.insert(0, str(_helpers[0].parent))
import guie_nb  # noqa: E402
import guie_nb.environment  # noqa: E402

print("guie_nb", guie_nb.__version__, "from", Path(guie_nb.__file__).parent)
guie_nb.environment.start_run(STAGED)  # the staged helper package? the run id to the output

# %% tags=["parameters"]
export_dir = "build/demo"  # the export notebook's output: submission.zip + verification.json
out_dir = "build/demo/submit"  # on Kaggle the top of /kaggle/working: the competition takes it from there
dry_run = False  # True: check the export's zip against its report, copy nothing

# %%
import json

from guie_nb.params import refuse_unknown_parameters, resolve_submit, write_resolved

refuse_unknown_parameters("05_submit")  # a name papermill injected that this notebook lacks (papermill only warns)

resolved = resolve_submit(export_dir=export_dir, out_dir=out_dir, dry_run=dry_run)
print(json.dumps(resolved["submit"], indent=1))

# %%
if dry_run:
    from guie_nb.preflight import preflight

    report = preflight(resolved)
else:
    from guie_nb.export.handoff import hand_over

    write_resolved(resolved, out_dir)
    report = hand_over(export_dir, out_dir, run_id=STAGED.get("run_id"))
    print(json.dumps(report, indent=2))
