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
# # 2 · Training: backbone → 64-d projection → margin head
#
# The model is Keras 3 and runs on the **JAX** backend: that is what Kaggle's TPU v5e-8 runs
# (its image has no TPU-enabled TensorFlow), and the same notebook runs on GPU and CPU. The batch
# is split over all devices by a `keras.distribution` (data parallel, or weights sharded when
# `layout="model_parallel"`); TensorFlow only feeds the `tf.data` pipeline over the TFRecords.
# On a TPU pod slice (several hosts) the same notebook runs on every host, one JAX process each,
# started with `GUIE_DISTRIBUTED=auto` (docs/training.md, "Pod slices").
#
# The embedding model is what we will submit: a ViT backbone in open_clip's layout, dropout, a
# projection to 64 dimensions (optionally 256 → 64) and L2 normalisation. For training, a margin
# head (ArcFace, CosFace, sub-center, with a fixed, growing or per-class margin) turns embeddings
# into class logits.

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
out_dir = "build/demo/train"
keras_backend = "jax"
cpu_devices = 0  # >0: emulate this many JAX CPU devices (tests of the multi-device path)
# model["backbone_weights"]: "" = random init; "kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3"
# (attached Kaggle Model), "open_clip:laion2b_s32b_b79k", or a local open_clip .bin/.safetensors
# or KerasHub preset folder (docs/backbone.md)
model = {"backbone": "demo-tiny", "backbone_weights": "", "embedding_dim": 64, "dropout": 0.0,
         "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1}}
train = {"epochs": 12, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.02, "checkpoint_every": 100}
dry_run = False  # True: check inputs (data, weights vs backbone), estimate memory and hours, stop

# %% [markdown]
# ## What this run will use
# The parameters become the configs the run uses (`guie_nb.params`): model, head, training, where
# the backbone weights will be read from, paths made absolute. They are printed and written to
# `resolved_config.json` in the output.

# %%
import json

from guie_nb import plots
from guie_nb.notebook import use_backend
from guie_nb.params import refuse_unknown_parameters, resolve_training, write_resolved
from guie_nb.preflight import preflight

refuse_unknown_parameters("02_train_tpu")  # a name papermill injected that this notebook lacks (papermill only warns)

use_backend(keras_backend, cpu_devices)  # before keras is imported
from guie_nb.training import distributed  # noqa: E402

distributed.initialize()  # on a pod slice (GUIE_DISTRIBUTED=auto): joins the hosts' processes; else nothing
resolved = resolve_training(data_dir=data_dir, out_dir=out_dir, model=model, train=train,
                            keras_backend=keras_backend, cpu_devices=cpu_devices, dry_run=dry_run)
print(json.dumps({k: resolved[k] for k in ("model", "weights", "train")}, indent=1))

import jax  # noqa: E402
import keras  # noqa: E402

from guie_nb.model.embedding import ModelConfig  # noqa: E402
from guie_nb.training.config import TrainConfig  # noqa: E402
from guie_nb.training.trainer import train as run_training  # noqa: E402

model_cfg = ModelConfig.from_dict(resolved["model"])
train_cfg = TrainConfig.from_dict(resolved["train"])
print("Keras", keras.__version__, "on", keras.backend.backend(), "|", len(jax.devices()), "x", jax.devices()[0].device_kind)

# %% [markdown]
# ## Dry run
# With `dry_run = True` the notebook stops after this cell: the data-prep output and the backbone
# weights are checked (a KerasHub preset's `config.json` and weight shapes, or an open_clip file's,
# against the configured backbone), and memory per chip and training hours are estimated against
# a TPU v5e-8's 16 GiB per chip and a 9 h session. The report is `preflight.json`.

# %%
if dry_run:
    report = preflight(resolved)
elif distributed.is_writer():  # on a pod slice, process 0 writes the outputs
    write_resolved(resolved, out_dir)

# %% [markdown]
# ## Train
# The held-out queries are scored before training and after every epoch (modified mP@5, overall
# and per source), so the first line below is the untrained model's score.
#
# Checkpoints go to `out_dir/checkpoints/` every `checkpoint_every` steps and at every epoch end.
# **Rerunning this notebook with the same parameters resumes** from the newest one (a Kaggle TPU
# session ends after 9 h: save the output as a dataset and point `out_dir` at a copy of it). A
# non-finite loss stops the run with an error and keeps the last good checkpoint.
#
# During an epoch a progress line is printed at each quarter and at least once a minute: steps done,
# time spent and left, images/s since the previous line (the first line includes compiling the
# step), the epoch's loss so far and the learning rate. Whole lines, so the saved notebook and the
# Kaggle log stay readable.

#
# **Cached embeddings** (`train["cached_embeddings"] = True`, with `freeze_backbone`; the
# `fifth_place` preset): a frozen backbone gives every image the same features in every epoch, so
# instead of running it on every batch, the run first embeds each training and validation image
# once (evaluation preprocessing, no augmentation) into `out_dir/feature_cache/` (float16 features
# and labels, one file per data-prep shard, a manifest with the backbone's weights hash), then
# trains only the neck and the margin head on those features, one compiled call per epoch, and
# scores each epoch on the cached validation features. A rerun skips the shards already embedded
# and continues the training from its last epoch's checkpoint; a cache made with another backbone,
# other weights or other data is refused. On a pod slice each host embeds its share of the shards.
# The outputs are the usual ones (`embedding.weights.h5` = backbone + trained neck), so fine-tuning
# and export do not change. `metrics.json` counts the images that went through the backbone in either mode
# (`backbone_forward_passes`).

# %%
if not dry_run:
    metrics = run_training(resolved["data"]["data_dir"], resolved["outputs"]["out_dir"], model_cfg, train_cfg)

# %% [markdown]
# ## How it went
# `history.csv` has one row per epoch: loss, accuracy, learning rate, margin and validation mP@5,
# overall and per source domain. The plot (also `history.png` in `out_dir`) starts the mP@5 curves
# at epoch 0, the score before training.

# %%
if not dry_run:
    print(f"mP@5 before training {metrics['initial']['map5']:.4f} -> after {metrics['final']['map5']:.4f}")
    print(f"{metrics['backbone_forward_passes']} images through the backbone"
          + (f" (cached once; {metrics['steps_per_second']:.0f} neck + head steps/s)"
             if metrics.get("cached_embeddings") and metrics.get("steps_per_second") else ""))
    print(f"{metrics['images_per_second']:.1f} images/s on {metrics['devices']} x {metrics['device_kind']} "
          f"({metrics['layout']}, {metrics['precision']}); the step compiled {metrics['train_step_compilations']} time(s)")
    history_dir = Path(resolved["outputs"]["out_dir"])
    if distributed.is_writer():
        plots.history(history_dir / "history.csv", history_dir / "history.png", initial=metrics["initial"])
