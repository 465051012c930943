"""A small demo dataset for the training tests: made once per session, in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.data.prepare import prepare

SMALL_SPEC = DemoSpec(products_classes=24, landmark_classes=16, views_per_class=6, min_side=64, max_side=96)


def make_small_data(root: Path) -> Path:
    """40 classes x 6 views: 28 training classes (168 images), 12 held out (2 queries each)."""
    roots = write_demo_sources(root / "raw", SMALL_SPEC)
    out = root / "data"
    if not (out / "manifest.json").is_file():
        prepare([{"kind": "products10k", "root": str(roots["products10k"]), "val_classes": 6, "queries_per_class": 2},
                 {"kind": "gldv2", "root": str(roots["gldv2"]), "val_classes": 6, "queries_per_class": 2}],
                out, max_side=96, images_per_shard=64, seed=0, progress=False)
    return out


RESUME_MODEL = {"backbone": "demo-tiny", "dropout": 0.1,
                "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1, "margin_schedule": "linear",
                         "margin_growth": 0.05}}
RESUME_TRAIN = {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "steps_per_epoch": 6,
                "steps_per_execution": 2, "checkpoint_every": 2, "keep_checkpoints": 10}


def run_resume_config(data_dir: str, out_dir: str) -> None:
    """The run the resume test interrupts (a subprocess entry point: `python _training_helpers.py`)."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    train(data_dir, out_dir, ModelConfig.from_dict(RESUME_MODEL), TrainConfig.from_dict(RESUME_TRAIN))


if __name__ == "__main__":
    import sys

    run_resume_config(sys.argv[1], sys.argv[2])
