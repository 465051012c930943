"""Cached embeddings vs. the on-the-fly frozen-backbone run, on one data-prep output (issue 12).

Both runs train the same fresh neck + margin head on the same frozen backbone with the same optimizer
and schedule (the demo preset's training parameters with `freeze_backbone`); the on-the-fly run
re-embeds every (augmented) training image each epoch and the validation set after each epoch,
the cached run embeds each image once (`TrainConfig.cached_embeddings`) and trains more epochs on
the stored features. Printed: the final validation mP@5 of each, the images each ran through the
backbone (`backbone_forward_passes` in their metrics.json) and the ratio, and the CPU seconds of
each run (wall-clock is distorted on a shared machine; CPU time is what the process used).

The demo has no pretrained backbone, and a frozen random ViT's features carry almost no retrieval
signal, so by default the backbone is first trained end to end with the preset's own training
(`--pretrain-epochs`), then frozen for both runs.

    python benchmarks/cached_embeddings.py --data-dir build/demo/data --out build/cached-bench
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import guie_nb  # noqa: E402,F401  (before tensorflow)


def run(data_dir: Path, out: Path, model: dict, train: dict) -> tuple[dict, float]:
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train as run_training

    cpu = time.process_time()
    metrics = run_training(data_dir, out, ModelConfig.from_dict(model), TrainConfig.from_dict(train))
    return metrics, time.process_time() - cpu


def pretrained_backbone(data_dir: Path, out: Path, model: dict, train: dict) -> Path:
    """Train `model` end to end (the preset's own training) and write its backbone as an open_clip
    `.safetensors` file: the stand-in for a pretrained CLIP backbone, which the demo does not have
    (a frozen random ViT gives features with almost no retrieval signal to train a neck on)."""
    from safetensors.numpy import save_file

    from guie_nb.model.convert import keras_to_open_clip_state_dict
    from guie_nb.model.embedding import ModelConfig, build_embedding_model
    from guie_nb.run_dir import EMBEDDING_WEIGHTS

    path = out / "backbone.safetensors"
    if not path.is_file():
        run(data_dir, out, model, {**train, "checkpoint_every": 0})
        embedding = build_embedding_model(ModelConfig.from_dict(model))
        embedding.load_weights(out / EMBEDDING_WEIGHTS)
        save_file(keras_to_open_clip_state_dict(embedding), str(path))
    return path


def compare(data_dir: Path, out: Path, epochs_on_the_fly: int, epochs_cached: int, preset: str = "demo",
            pretrain_epochs: int = 0, train_overrides: dict | None = None, model_overrides: dict | None = None) -> dict:
    """Both runs into `out/on_the_fly` and `out/cached`; returns the comparison (also `out/comparison.json`).

    `pretrain_epochs` > 0: first train the preset's model end to end for that many epochs
    (`pretrained_backbone`, into `out/pretrain`) and freeze that backbone, with a fresh neck and head.
    `train_overrides` / `model_overrides`: parameters changed for all runs (e.g. a smaller batch on
    tiny data, neck dropout).
    """
    from guie_nb import presets

    p = presets.notebook_params(preset, str(out))["02_train_tpu"]
    model, train = dict(p["model"]), {**p["train"], **(train_overrides or {})}
    if pretrain_epochs:  # the preset's own model, trained end to end
        model["backbone_weights"] = str(pretrained_backbone(data_dir, out / "pretrain", model,
                                                            {**train, "epochs": pretrain_epochs}))
    model.update(model_overrides or {})
    base = {**train, "freeze_backbone": True, "checkpoint_every": 0}
    fly, fly_cpu = run(data_dir, out / "on_the_fly", model, {**base, "epochs": epochs_on_the_fly})
    cached, cached_cpu = run(data_dir, out / "cached", model,
                             {**base, "epochs": epochs_cached, "cached_embeddings": True})
    result = {
        "preset": preset, "model": model, "train": base, "pretrain_epochs": pretrain_epochs,
        "on_the_fly": {"epochs": epochs_on_the_fly, "map5": fly["final"]["map5"],
                       "map5_initial": fly["initial"]["map5"],
                       "backbone_forward_passes": fly["backbone_forward_passes"], "cpu_seconds": fly_cpu},
        "cached": {"epochs": epochs_cached, "map5": cached["final"]["map5"], "map5_initial": cached["initial"]["map5"],
                   "backbone_forward_passes": cached["backbone_forward_passes"], "cpu_seconds": cached_cpu,
                   "steps_per_second": cached["steps_per_second"]},
    }
    result["forward_pass_ratio"] = fly["backbone_forward_passes"] / cached["backbone_forward_passes"]
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="data-prep output (e.g. build/demo/data)")
    ap.add_argument("--out", type=Path, required=True, help="a new folder for both runs")
    ap.add_argument("--epochs-on-the-fly", type=int, default=12, help="the demo preset's epochs")
    ap.add_argument("--epochs-cached", type=int, default=100)
    ap.add_argument("--preset", default="demo", help="whose training parameters (02_train_tpu) both runs use")
    ap.add_argument("--pretrain-epochs", type=int, default=12,
                    help="train the backbone end to end first, then freeze it (0: the preset's backbone_weights)")
    ap.add_argument("--train", type=json.loads, default={}, help="JSON: training parameters for all runs")
    ap.add_argument("--model", type=json.loads, default={}, help="JSON: model parameters for both frozen runs")
    args = ap.parse_args(argv)
    r = compare(args.data_dir, args.out, args.epochs_on_the_fly, args.epochs_cached, args.preset,
                args.pretrain_epochs, args.train, args.model)
    for name in ("on_the_fly", "cached"):
        x = r[name]
        print(f"{name:10s} {x['epochs']:4d} epochs: mP@5 {x['map5_initial']:.4f} -> {x['map5']:.4f}, "
              f"{x['backbone_forward_passes']} images through the backbone, {x['cpu_seconds']:.0f} CPU s")
    print(f"backbone forward passes: {r['forward_pass_ratio']:.1f}x fewer with the cache; "
          f"cached steps/s {r['cached']['steps_per_second']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
