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
# # 1 · Data-prep: raw image collections → sharded TFRecords
#
# The recipe trains on several public datasets at once (ImageNet-1k, Products-10K, Google
# Landmarks v2). Each arrives in its own layout; this notebook reads them in those real layouts,
# samples a fixed number of images per class, gives every class a label in **one global label
# space** (each source gets an offset), holds out whole classes as a retrieval validation split,
# and writes everything as TFRecord shards plus a `manifest.json` that later notebooks read.
#
# With `demo_data_dir` set, it first generates the embedded demo dataset: synthetic objects seen in
# several views, written in the Products-10K and GLDv2 layouts, so the same readers run on it.
#
# **Real data.** Each `sources` entry is `{"kind": ..., "root": ...}` plus options. Kinds:
# `products10k` (`train.csv` + `train/`), `gldv2` (`train.csv` + `train/a/b/c/<id>.jpg`),
# `imagenet` (Kaggle's `ILSVRC/Data/CLS-LOC/train/<synset>/` + `LOC_synset_mapping.txt`),
# `imagenet_tfrecord` (TF Model Garden `train-*` shards), `folder` (one folder per class) and
# `csv` (`path,label`). Keys an entry leaves out take the recipe's defaults
# (`guie_nb.data.recipe`): 50 images per class, and for GLDv2 the 7,000 biggest classes.
# The seed recipe is
# `recipe_sources("/kaggle/input/<imagenet>", "/kaggle/input/<products10k>", "/kaggle/input/<gldv2>")`.

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
guie_nb.environment.check_environment(required=())  # Kaggle's packages are not our pins

# %% tags=["parameters"]
sources = [
    {"kind": "products10k", "root": "build/demo/raw/products10k", "val_classes": 30, "queries_per_class": 2},
    {"kind": "gldv2", "root": "build/demo/raw/gldv2", "val_classes": 30, "queries_per_class": 2},
]
val_sources = []  # validation-only sources, e.g. [{"kind": "gpr1200", "root": ...}]: scored per domain
out_dir = "build/demo/data"
demo_data_dir = "build/demo/raw"  # None for real data
max_side = 160  # longest image side kept in the shards
images_per_shard = 500
seed = 0
processes = None  # worker processes; None: all cores
max_output_gb = 20.0  # Kaggle keeps 20 GB of notebook output: fail early above this
num_shards = 1  # >1: this kernel writes part `shard_index` of `num_shards` (data over 20 GB / 12 h)
shard_index = 0
dry_run = False  # True: check the sources and estimate the output, write the report, stop

# %% [markdown]
# ## What this run will use
# The parameters become the configs the notebook runs with (`guie_nb.params`): every source with
# the recipe's defaults filled in and paths made absolute. They are printed and written to
# `resolved_config.json` in the output, so what ran can always be read back.

# %%
import json

from guie_nb.data.demo import write_demo_sources
from guie_nb.data.prepare import prepare
from guie_nb.params import refuse_unknown_parameters, resolve_data_prep, write_resolved
from guie_nb.preflight import preflight

refuse_unknown_parameters("01_data_prep")  # a name papermill injected that this notebook lacks (papermill only warns)

resolved = resolve_data_prep(sources=sources, val_sources=val_sources, out_dir=out_dir, demo_data_dir=demo_data_dir,
                             max_side=max_side, images_per_shard=images_per_shard, seed=seed, processes=processes,
                             max_output_gb=max_output_gb, num_shards=num_shards, shard_index=shard_index,
                             dry_run=dry_run)
print(json.dumps(resolved["data"], indent=1))

# %% [markdown]
# ## Dry run
# With `dry_run = True` the notebook stops after this cell: every source root and listing file is
# read and checked, the classes are selected and the output planned as for the real run, and a
# seeded sample of images is processed to estimate the output size and time. The report
# (`preflight.json`) lists missing inputs and anything over Kaggle's limits.

# %%
if dry_run:
    report = preflight(resolved)
else:
    write_resolved(resolved, out_dir)

# %% [markdown]
# ## The demo sources
# Skipped for real data. The generator is seeded: the same seed always writes the same files.

# %%
if demo_data_dir and not dry_run:
    roots = write_demo_sources(demo_data_dir)
    print({name: str(path) for name, path in roots.items()})

# %% [markdown]
# ## Read, sample, split and write
# Every source is read (and checked) before any image is touched, so a wrong path or a missing
# CSV column fails here at once; then the output size is estimated from a sample and checked
# against `max_output_gb`. The shards are written over all cores. If the session dies, run the
# notebook again: finished shards are kept (each carries a hash of what it was made from) and
# the rest are written; a rerun with the same parameters gives byte-identical files.
# Unreadable images are skipped and listed, with their reasons, in the manifest.

# %%
if not dry_run:
    data = resolved["data"]
    manifest = prepare(data["sources"], data["out_dir"], max_side=data["max_side"],
                       images_per_shard=data["images_per_shard"], seed=data["seed"], processes=data["processes"],
                       max_output_gb=data["max_output_gb"], num_shards=data["num_shards"],
                       shard_index=data["shard_index"], val_sources=data["val_sources"])
    print(json.dumps({name: {k: v for k, v in s.items() if k != "class_counts"}
                      for name, s in manifest["sources"].items()}, indent=1))
    print("classes:", manifest["num_classes"], "| training images:", manifest["train_images"],
          "| queries:", manifest["val"]["num_queries"], "| index:", manifest["val"]["num_index"],
          "| skipped:", len(manifest["skipped"]), manifest["skipped_counts"])
    print(f"output: {manifest['output_bytes'] / 1e6:.1f} MB (estimated {manifest['estimated_bytes'] / 1e6:.1f} MB)")

# %% [markdown]
# ## What the shards hold
# Training images as the later notebooks will read them: resized to at most `max_side` and
# converted to RGB JPEG, eight per source from the start of the shuffled training stream, each with
# its class name in the source's own labels and its stored size. Saved as `samples.png` in `out_dir`.

# %%
if not dry_run:
    from guie_nb import plots

    plots.sample_grid(data["out_dir"], manifest, Path(data["out_dir"]) / "samples.png")

# %% [markdown]
# Training images per class, classes sorted by count: each class is capped at its source's
# `images_per_class`, so the chart shows how many classes fall short of the cap (the long tail).
# With `num_shards > 1` the counts are this part's share. Saved as `class_counts.png` in `out_dir`.

# %%
if not dry_run:
    plots.class_counts(manifest, Path(data["out_dir"]) / "class_counts.png")
