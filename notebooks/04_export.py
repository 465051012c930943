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
dry_run = False  # True: check the model to export, estimate zip size and scoring time, stop

# %%
import json

from guie_nb.notebook import use_backend
from guie_nb.params import resolve_export, write_resolved
from guie_nb.preflight import preflight

use_backend("tensorflow")  # before keras is imported: the export runs on TensorFlow
resolved = resolve_export(data_dir=data_dir, model_dir=model_dir, train_dir=train_dir, out_dir=out_dir,
                          export_format=export_format, flip_tta=flip_tta, dry_run=dry_run)
print(json.dumps(resolved["export"], indent=1))

# %% [markdown]
# ## Dry run
# With `dry_run = True` the notebook stops after this cell: the model to export, the held-out data
# and the training metrics are checked, and the zip size and the scorer's running time (205,000
# images, one at a time) are estimated against the 9 h limit (`preflight.json`).

# %%
if dry_run:
    report = preflight(resolved)
else:
    write_resolved(resolved, out_dir)

    from pathlib import Path

    from guie_nb import run_dir
    from guie_nb.data.prepare import load_manifest
    from guie_nb.evaluation import ValidationSet, embed_validation, score
    from guie_nb.export.build import export_submission
    from guie_nb.export.submission import SubmissionEmbedder

    ex = resolved["export"]
    out = Path(ex["out_dir"])
    model, cfg = run_dir.load_embedding_model(ex["model_dir"])

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
    val = ValidationSet.from_manifest(resolved["data"]["data_dir"], load_manifest(resolved["data"]["data_dir"]))
    embedder = SubmissionEmbedder(zip_path)
    embeddings = embed_validation(embedder, val)  # as the scorer runs it: one image at a time
    embedder.close()
    scores = score(val, *embeddings)
    train_metrics = json.loads((Path(ex["train_dir"]) / run_dir.METRICS).read_text())
    report = {
        "map5_untrained": train_metrics["initial"]["map5"],
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
# The submission against the untrained model (the training notebook's score before its first step),
# overall and per source domain. Saved as `map5_per_domain.png`.

# %%
if not dry_run:
    plots.domain_scores(scores, out / "map5_per_domain.png", baseline=train_metrics["initial"],
                        labels=("untrained", "submission"))

# %% [markdown]
# ## Where it fails
# The six lowest-scoring queries (lowest P@5; among equals, the one farthest from its nearest
# neighbour first), shown the same way. Saved as `retrieval_worst.png`.

# %%
if not dry_run:
    plots.retrieval_strips(worst, images, out / "retrieval_worst.png",
                           title="the lowest-scoring held-out queries (green: hit, red: miss)")
