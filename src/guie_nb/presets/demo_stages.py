"""The demo as a chain of training stages (the 1st place's shape at demo scale, minutes on a CPU):
train everything at 64 px; tune the backbone against the frozen head at 80 px with overlapping
patches (stride 6 < patch 8); a last pass on the Products-10K-like source only, at a larger margin.
Each stage is its own kernel (`02_train_tpu:train-64`, `03_finetune:backbone-80`,
`03_finetune:products`), each starting from the output of the one before; the export reads the last.
No score is claimed: it shows the mechanism (`make demo PROFILE=demo_stages`)."""

from __future__ import annotations

from guie_nb.presets import demo
from guie_nb.presets._kaggle import Stage, training_stages

MODEL = demo.MODEL
STAGES = [
    Stage("train-64", {"epochs": 12, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.02,
                       "checkpoint_every": 100}),
    Stage("backbone-80", {"epochs": 2, "batch_size": 64, "learning_rate": 3e-4, "warmup_epochs": 0.0,
                          "weight_decay": 0.02, "freeze_head": True},
          image_size=80, patch_stride=6),
    Stage("products", {"epochs": 2, "batch_size": 32, "learning_rate": 1e-4, "warmup_epochs": 0.0,
                       "weight_decay": 0.02, "train_sources": ["products10k"]},
          margin=0.15),
]


def notebook_params(root: str) -> dict[str, dict]:
    data_prep = demo.notebook_params(root)["01_data_prep"]
    return {"01_data_prep": data_prep, **training_stages(root, data_prep["out_dir"], MODEL, STAGES, {})}
