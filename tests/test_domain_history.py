"""A validation-only multi-domain source (GPR1200) is scored per domain in the training history
and metrics, through the real `train()`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _data_helpers import write_gpr1200  # noqa: E402
from _training_helpers import SMALL_SPEC  # noqa: E402


def test_history_has_map5_per_domain_of_a_validation_only_source(tmp_path):
    from guie_nb.data.demo import write_demo_sources
    from guie_nb.data.prepare import prepare
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    roots = write_demo_sources(tmp_path / "raw", SMALL_SPEC)
    gpr = write_gpr1200(tmp_path / "gpr1200", classes=[3, 4, 205, 206], per_class=3)  # landmarks, iNat
    manifest = prepare([{"kind": "products10k", "root": str(roots["products10k"]), "val_classes": 4}],
                       tmp_path / "data", max_side=64, images_per_shard=64, seed=0, progress=False,
                       val_sources=[{"kind": "gpr1200", "root": str(gpr)}])
    assert manifest["sources"]["gpr1200"]["train_images"] == 0
    metrics = train(tmp_path / "data", tmp_path / "train", ModelConfig.from_dict({"backbone": "demo-tiny"}),
                    TrainConfig.from_dict({"epochs": 1, "batch_size": 16, "steps_per_epoch": 1}))
    with open(tmp_path / "train" / "history.csv") as f:
        columns = next(csv.reader(f))
    for key in ("val_map5", "val_map5_products10k", "val_map5_gpr1200", "val_map5_gpr1200_landmarks",
                "val_map5_gpr1200_inat"):
        assert key in columns, columns
        assert key.removeprefix("val_") in metrics["final"]
