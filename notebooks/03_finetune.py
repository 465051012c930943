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
# # 3 · Fine-tune at a lower learning rate (optionally at a higher resolution)
#
# The seed solution gained +0.02 mP@5 from a final pass at a lower learning rate; the 1st place
# tuned the backbone against a *frozen* head and raised the resolution 224 → 280. This notebook
# starts from the training notebook's output (the embedding model *and* the margin head) and
# continues with the same data. With `image_size` set, the model is rebuilt at that resolution
# and the position embeddings are interpolated to the larger patch grid; with `patch_stride` below
# the patch size (1st place: 12 for patch 14, at 290 px) the patches overlap, and the grid grows too.

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
import guie_nb  # noqa: E402  (before tensorflow: see guie_nb/__init__.py)
import guie_nb.environment  # noqa: E402

print("guie_nb", guie_nb.__version__, "from", Path(guie_nb.__file__).parent)
guie_nb.environment.start_run(STAGED)  # the staged helper package? the run id to the output
guie_nb.environment.check_environment(  # Kaggle's packages are not our pins
    required=("keras", "jax", "tensorflow", "optax", "orbax-checkpoint"))

# %% tags=["parameters"]
data_dir = "build/demo/data"
init_dir = "build/demo/train"
out_dir = "build/demo/finetune"
keras_backend = "jax"
cpu_devices = 0
image_size = None  # e.g. 280 for the 1st place's 224 -> 280 step; None keeps the training size
patch_stride = None  # e.g. 12 (with image_size 290) for the 1st place's overlapping patches; None keeps the training run's
model_changes = None  # a later stage's model changes, e.g. {"patch_stride": 12, "head": {"margin": 0.65}}
train = {"epochs": 3, "batch_size": 64, "learning_rate": 3e-4, "warmup_epochs": 0.0, "weight_decay": 0.02}
dry_run = False  # True: check the training notebook's output, estimate memory and hours, stop

# %% [markdown]
# ## What this run will use
# The model is the one `init_dir` holds (`model_config.json`: the training notebook's, or an earlier
# stage's), with `model_changes`, then `image_size` and `patch_stride` applied when set; the
# configs are printed and written to `resolved_config.json` in the output (`guie_nb.params`).

# %%
import json

from guie_nb import plots
from guie_nb.notebook import use_backend
from guie_nb.params import refuse_unknown_parameters, resolve_finetune, write_resolved
from guie_nb.preflight import preflight

refuse_unknown_parameters("03_finetune")  # a name papermill injected that this notebook lacks (papermill only warns)

use_backend(keras_backend, cpu_devices)  # before keras is imported
from guie_nb.training import distributed  # noqa: E402

distributed.initialize()  # on a pod slice (GUIE_DISTRIBUTED=auto): joins the hosts' processes; else nothing
resolved = resolve_finetune(data_dir=data_dir, init_dir=init_dir, out_dir=out_dir, train=train, image_size=image_size,
                            patch_stride=patch_stride, model_changes=model_changes, keras_backend=keras_backend,
                            cpu_devices=cpu_devices, dry_run=dry_run)
print(json.dumps({k: resolved[k] for k in ("model", "train")}, indent=1))

from guie_nb.model.embedding import ModelConfig  # noqa: E402
from guie_nb.training.config import TrainConfig  # noqa: E402
from guie_nb.training.trainer import train as run_training  # noqa: E402

model_cfg = ModelConfig.from_dict(resolved["model"])
train_cfg = TrainConfig.from_dict(resolved["train"])

# %% [markdown]
# ## Dry run
# With `dry_run = True` the notebook stops after this cell, having checked the data and the
# training notebook's outputs and estimated memory per chip and hours (`preflight.json`).

# %%
if dry_run:
    report = preflight(resolved)
elif distributed.is_writer():  # on a pod slice, process 0 writes the outputs
    write_resolved(resolved, out_dir)

# %% [markdown]
# ## Continue training
# The first score printed is the training notebook's final model, re-measured here (at the new
# resolution, if it changed). Like training, a rerun resumes from `out_dir/checkpoints/`, and each
# epoch prints a progress line at every quarter and at least once a minute.

# %%
if not dry_run:
    metrics = run_training(resolved["data"]["data_dir"], resolved["outputs"]["out_dir"], model_cfg, train_cfg,
                           init_dir=resolved["init"]["init_dir"])

# %% [markdown]
# ## How it went
# Loss, learning rate and mP@5 per epoch (overall and per source domain), epoch 0 being the
# training notebook's model; also `history.png` in `out_dir`.

# %%
if not dry_run:
    print(f"mP@5 {metrics['initial']['map5']:.4f} -> {metrics['final']['map5']:.4f} after fine-tuning")
    history_dir = Path(resolved["outputs"]["out_dir"])
    if distributed.is_writer():
        plots.history(history_dir / "history.csv", history_dir / "history.png", initial=metrics["initial"])
