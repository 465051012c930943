"""One process of the multi-host training test (a subprocess entry point).

    python _distributed_helpers.py DATA_DIR OUT_DIR LOCAL_DEVICES [cached]

The GUIE_COORDINATOR / GUIE_NUM_PROCESSES / GUIE_PROCESS_ID environment variables make it one
process of a multi-process run (`guie_nb.training.distributed`); without them it is a single
process. LOCAL_DEVICES emulated CPU devices per process. `cached`: the cached-embeddings run
(CACHED_MODEL, CACHED_TRAIN) instead of the on-the-fly one.
"""

from __future__ import annotations

import os
import sys

# a small run of every multi-host hook: dropout (RNG over the global batch), per-class margins
# (label counts summed over the processes' shares of the files), mid-epoch checkpoints,
# evaluation before and after training, the outputs
MODEL = {"backbone": "demo-tiny", "dropout": 0.1,
         "head": {"kind": "arcface", "scale": 16.0, "margin_schedule": "dynamic", "margin_min": 0.1,
                  "margin_max": 0.3}}
TRAIN = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "learning_rate": 0.05, "steps_per_epoch": 2,
         "steps_per_execution": 1, "checkpoint_every": 1, "keep_checkpoints": 10}

# the cached-embeddings path (guie_nb.training.cached): each process embeds its share of the files,
# every process trains the neck (BN, dropout) + head (margins from the summed label counts)
CACHED_MODEL = {**MODEL, "neck_batchnorm": True, "hidden_dim": 32}
CACHED_TRAIN = {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "freeze_backbone": True,
                "cached_embeddings": True, "keep_checkpoints": 10}


def main(data_dir: str, out_dir: str, local_devices: int, cached: bool = False) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import guie_nb  # noqa: F401  (before tensorflow: see guie_nb/__init__.py)
    from guie_nb.training import distributed

    distributed.initialize()  # before any device is touched
    import jax

    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
          f"{jax.device_count()} devices", flush=True)
    model, run = (CACHED_MODEL, CACHED_TRAIN) if cached else (MODEL, TRAIN)
    train(data_dir, out_dir, ModelConfig.from_dict(model), TrainConfig.from_dict(run))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), cached=sys.argv[4:] == ["cached"])
