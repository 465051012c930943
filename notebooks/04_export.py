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
# # 4 · Export `submission.zip` and score it like the scorer
#
# The competition takes a *model*: the scorer feeds it each image as a uint8 `[1, H, W, 3]`
# tensor at its native size and reads `embedding_norm`. So the resize and the normalisation live
# inside the exported graph. This notebook rebuilds the embedding model on the TensorFlow
# backend, loads the fine-tuned weights, writes the SavedModel (in a form TF 2.6.4 can load),
# checks it against the Keras model, zips it, and scores the zip on the held-out queries the way
# the scorer would: one image at a time, Euclidean kNN, modified mP@5.

# %% [markdown]
# The helper package `guie_nb`: on Kaggle it comes from the helper dataset attached to this
# kernel (under `/kaggle/input`), locally from the installed package. Same source in both places.

# %%
import os
import sys
from pathlib import Path

_inputs = Path(os.environ.get("GUIE_KAGGLE_INPUT", "/kaggle/input"))  # tests move it
_helpers = [*_inputs.glob("guie-nb-helpers/guie_nb"), *_inputs.glob("*/*/guie-nb-helpers/guie_nb")]
if _helpers:
    sys.path.insert(0, str(_helpers[0].parent))
import guie_nb  # noqa: E402  (before tensorflow: see guie_nb/__init__.py)

print("guie_nb", guie_nb.__version__, "from", Path(guie_nb.__file__).parent)

# %% tags=["parameters"]
data_dir = "build/demo/data"
model_dir = "build/demo/finetune"
train_dir = "build/demo/train"  # for the untrained score in the report
out_dir = "build/demo"
check_sizes = [[64, 64], [97, 301], [300, 120], [224, 224]]

# %%
from guie_nb.notebook import use_backend

use_backend("tensorflow")

import json
import shutil
import tempfile
from pathlib import Path

from guie_nb.data.prepare import load_manifest
from guie_nb.evaluation import ValidationSet, evaluate_embedder
from guie_nb.export.checks import compare_with_keras
from guie_nb.export.saved_model import SavedModelEmbedder, export_saved_model
from guie_nb.export.submission import submission_format, zip_saved_model
from guie_nb.model.embedding import ModelConfig, build_embedding_model
from guie_nb.training.trainer import EMBEDDING_WEIGHTS

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
cfg = ModelConfig.load(Path(model_dir) / "model_config.json")
model = build_embedding_model(cfg)
model.load_weights(Path(model_dir) / EMBEDDING_WEIGHTS)

# %% [markdown]
# ## Write and check the SavedModel
# The exported graph must give the Keras model's embeddings on images of any size.

# %%
work = Path(tempfile.mkdtemp(prefix="export-"))
saved = export_saved_model(model, cfg, work / "saved_model")
embedder = SavedModelEmbedder(saved)
diff = compare_with_keras(embedder, model, cfg, [tuple(s) for s in check_sizes])
print(json.dumps(diff, indent=1))

# %%
zip_path = zip_saved_model(saved, out / "submission.zip")
print(zip_path, submission_format(zip_path), f"{zip_path.stat().st_size / 1e6:.1f} MB")

# %% [markdown]
# ## Score the submission on the held-out queries

# %%
val = ValidationSet.from_manifest(data_dir, load_manifest(data_dir))
scores = evaluate_embedder(embedder, val)
train_metrics = json.loads((Path(train_dir) / "metrics.json").read_text())
report = {
    "map5_untrained": train_metrics["initial"]["map5"],
    "map5_trained": scores["map5"],
    **{f"{k}_trained": v for k, v in scores.items() if k != "map5"},
    "embedding_dim": diff["embedding_dim"],
    "submission": str(zip_path),
    "format": submission_format(zip_path),
    "max_abs_diff_vs_keras": diff["max_abs_diff"],
}
(out / "report.json").write_text(json.dumps(report, indent=2))
shutil.rmtree(work)
print(json.dumps(report, indent=2))
