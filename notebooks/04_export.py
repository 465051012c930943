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
# # 4 · Export `submission.zip`, proven in the scorer's own runtime
#
# The competition takes a *model*, and runs it in **TensorFlow 2.6.4** (a SavedModel fed uint8
# `[1, H, W, 3]`, output `embedding_norm`) or **PyTorch 1.11.0** (`saved_model.pt` fed uint8
# `[1, 3, H, W]`, output `model(x)[0]`), one image at a time at its native size. Both reject
# naive exports from today's frameworks, so resize, normalisation and the optional flip TTA live
# inside the exported model, and the zip is **verified in a local copy of the scorer's runtime**
# (a Python 3.9 environment with the pinned framework, created once) on images of many sizes and
# modes before it is handed over. A rejected export raises, naming each failure, and leaves no
# `submission.zip` behind. A verified one gets `verification.json` (its sha256 and size, this run's
# id): creating the scorer runtimes needs internet, so this kernel's output cannot be submitted;
# the offline submit notebook (05) checks the zip against that report and hands it over.

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
guie_nb.environment.check_environment(required=("keras", "tensorflow"))  # Kaggle's packages are not our pins

# %% tags=["parameters"]
data_dir = "build/demo/data"
model_dir = "build/demo/finetune"
train_dir = "build/demo/train"  # for the untrained score in the report
out_dir = "build/demo"
export_format = "saved_model"  # "saved_model" (TF 2.6.4) or "torchscript" (PyTorch 1.11.0)
flip_tta = False  # add the mirrored image's embedding inside the model (2x the scoring time)
# instead of model_dir (then set model_dir = None; see "The model to export" below):
zero_shot = None  # {"model": {...}, "reduction": "pca" | "whiten", "sample_images": 2000}: no training
soup = None  # {"model_dirs": [...], "mode": "uniform" | "greedy", "reduction": None}: runs' weights averaged
concat = None  # {"parts": [{"model_dirs": [...], "mode": "greedy"}, ...], "reduction": "pca"}: backbones joined
dry_run = False  # True: check the model to export, estimate zip size and scoring time, stop

# %%
import json

from guie_nb.notebook import use_backend
from guie_nb.params import refuse_unknown_parameters, resolve_export, write_resolved
from guie_nb.preflight import export_machine, preflight

refuse_unknown_parameters("04_export")  # a name papermill injected that this notebook lacks (papermill only warns)

use_backend("tensorflow")  # before keras is imported: the export runs on TensorFlow
resolved = resolve_export(data_dir=data_dir, model_dir=model_dir, train_dir=train_dir, out_dir=out_dir,
                          export_format=export_format, flip_tta=flip_tta, zero_shot=zero_shot, soup=soup,
                          concat=concat, dry_run=dry_run)
print(json.dumps(resolved["export"], indent=1))

# %% [markdown]
# ## Dry run
# With `dry_run = True` the notebook stops after this cell: the model to export, the held-out data
# and the training metrics are checked, and the zip size and the scorer's running time (205,000
# images, one at a time) are estimated against the 9 h limit, and this kernel's own hours (every
# forward pass below, counted, at an assumed throughput of this machine: CPU or GPU) against its
# session (`preflight.json`).

# %%
if dry_run:
    report = preflight(resolved)
else:
    write_resolved(resolved, out_dir)

# %% [markdown]
# ## The model to export
# One of four sources, whichever the parameters name:
#
# - **`model_dir`**: a trained run folder (the fine-tune's output), loaded as it is.
# - **`zero_shot`**: no training at all. The pretrained backbone (`backbone_weights`) keeps its
#   features; only the projection to 64-d is fitted, as **PCA** (or **PCA-whitening**: each component
#   divided by the square root of its variance) of the backbone's features on a sample of the
#   training images, mean-centred. The fit is written into the model's own `projection` layer
#   (kernel = the components, bias = -mean @ kernel), so the export below is unchanged. This is
#   the 4th-place team's zero-shot notebook (CLIP + PCA to 64-d: 0.603 private), the first thing to
#   try: it needs only a CPU. The model before the fit (the backbone with a random projection) is
#   scored as the baseline. The result is saved as a run folder, `out_dir/zero_shot`.
# - **`soup`**: a *weight soup* of several fine-tuned runs of one architecture (Wortsman et al.
#   2022): their weights averaged (`uniform`), or runs added best first while the held-out mP@5
#   does not drop (`greedy`); optionally the projection refitted as PCA of the soup's features.
#   Saved as `out_dir/soup`.
# - **`concat`**: several backbones in one model (the 4th-place recipe: a ViT-L-14-336 soup and a
#   ViT-H-14 soup). Each part is souped as above (or is one run); their backbones become the towers
#   of one model, their features concatenated, and the projection to 64-d is fitted as PCA of the
#   concatenation on a sample of the training images. The first part's backbone sets the model's
#   input size (the largest); a tower trained at a smaller size sees the image resized to it inside
#   the model, in every export format. Saved as `out_dir/concat`.

# %%
if not dry_run:
    from pathlib import Path

    from guie_nb import run_dir
    from guie_nb.data.prepare import load_manifest
    from guie_nb.evaluation import ValidationSet, embed_validation, score
    from guie_nb.export.build import export_submission
    from guie_nb.export.model_source import export_model
    from guie_nb.export.submission import SubmissionEmbedder

    # the model work below runs where TensorFlow puts it: the GPU of a kernel staged on one (a preset's
    # KERNEL_MACHINES), else the CPU; the dry run's hours assumed the same machine (preflight.json)
    print("TensorFlow runs the model work on the", export_machine().upper())
    ex = resolved["export"]
    out = Path(ex["out_dir"])
    data = resolved["data"]["data_dir"]
    val = ValidationSet.from_manifest(data, load_manifest(data))
    source = export_model(ex, data, val)
    model, cfg = source.model, source.cfg
    towers = " + ".join([cfg.backbone, *(e["backbone"] for e in cfg.extra_backbones)])
    print(f"{towers} -> {cfg.embedding_dim}-d, exported from {ex['run_dir']}")
    if source.info:
        print(json.dumps(source.info, indent=1))

# %% [markdown]
# ## Export, then verify in the scorer runtime
# The first run creates the runtime (a few minutes of downloads; cached under
# `$GUIE_SCORER_RUNTIMES`). The verifier unzips, loads and feeds the model like the scorer: tiny,
# huge, very wide and tall images, grayscale, RGBA, CMYK and palette images converted to RGB. Each
# output must be <= 64 finite float32 values with cosine >= 0.9999 to the Keras model's embedding.

# %%
if not dry_run:
    verified = export_submission(model, cfg, ex["format"], out / "submission.zip", flip_tta=ex["flip_tta"])
    zip_path = Path(verified.zip_path)
    print(f"{zip_path}: {zip_path.stat().st_size / 1e6:.1f} MB")
    # what the submit notebook checks the zip against: its sha256 and size as verified, this run's id
    from guie_nb.export.handoff import write_verification

    print(write_verification(zip_path, passed=verified.ok, fmt=verified.format, failures=verified.failures,
                             verified_in=verified.runtime, verified_images=len(verified.per_image),
                             run_id=STAGED.get("run_id")))

# %% [markdown]
# ## Score the submission on the held-out queries
# One image at a time, Euclidean kNN, modified mP@5, per source domain. The embeddings are kept for
# the pictures below.

# %%
if not dry_run:
    embedder = SubmissionEmbedder(zip_path)
    embeddings = embed_validation(embedder, val)  # as the scorer runs it: one image at a time
    embedder.close()
    scores = score(val, *embeddings)
    # the untrained baseline: the training notebook's score before its first step, or (zero-shot)
    # the backbone with its random projection, scored before the fit
    if source.initial is not None:
        initial = source.initial
    else:
        initial = json.loads((Path(ex["train_dir"]) / run_dir.METRICS).read_text())["initial"]
    report = {
        "map5_untrained": initial["map5"],
        "map5_trained": scores["map5"],
        **{f"{k}_trained": v for k, v in scores.items() if k != "map5"},
        "embedding_dim": verified.embedding_dim,
        "submission": str(zip_path),
        "format": verified.format,
        "flip_tta": ex["flip_tta"],
        "verified_in": verified.runtime,
        "verified_images": len(verified.per_image),
        "max_abs_diff_vs_keras": verified.max_abs_diff,
        "min_cosine_vs_keras": verified.min_cosine,
        "per_image_ms_in_scorer_runtime": 1000 * verified.per_image_seconds,
        "scoring_hours_estimate": verified.scoring_hours_estimate,
        "warnings": verified.warnings,
        **source.info,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))

# %% [markdown]
# ## What the submission retrieves
# Two held-out queries per domain (the first in the query file), each with its five nearest index
# images by the embeddings scored above, nearest first: a green frame is a relevant image (a hit),
# red a miss, with the Euclidean distance. Saved as `retrieval_examples.png` in `out_dir`.

# %%
if not dry_run:
    from guie_nb import plots
    from guie_nb.evaluation import pick_examples, query_results, read_images, worst_queries

    results = query_results(val, embeddings)
    examples, worst = pick_examples(results, per_source=2), worst_queries(results, n=6)
    images = read_images(val.query_files + val.index_files,
                         {i for r in examples + worst for i in (r.query_id, *r.neighbours)})
    plots.retrieval_strips(examples, images, out / "retrieval_examples.png",
                           title="held-out queries and their 5 nearest index images (green: hit, red: miss)")

# %% [markdown]
# ## mP@5 per domain
# The submission against the untrained model (the training notebook's score before its first step;
# for a zero-shot export, the backbone with a random projection), overall and per source domain. Saved as `map5_per_domain.png`.

# %%
if not dry_run:
    plots.domain_scores(scores, out / "map5_per_domain.png", baseline=initial,
                        labels=("untrained", "submission"))

# %% [markdown]
# ## Where it fails
# The six lowest-scoring queries (lowest P@5; among equals, the one farthest from its nearest
# neighbour first), shown the same way. Saved as `retrieval_worst.png`.

# %%
if not dry_run:
    plots.retrieval_strips(worst, images, out / "retrieval_worst.png",
                           title="the lowest-scoring held-out queries (green: hit, red: miss)")
