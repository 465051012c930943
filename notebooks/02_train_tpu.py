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
# (its image has no TPU-enabled TensorFlow), and the same code runs on GPU and CPU. TensorFlow is
# still used, for the `tf.data` pipeline over the TFRecords.
#
# The embedding model is what we will submit: a ViT backbone in open_clip's layout, dropout, a
# projection to 64 dimensions and L2 normalisation. For training, a margin head (ArcFace: an
# additive angular margin on the target class) turns embeddings into class logits.

# %% tags=["parameters"]
data_dir = "build/demo/data"
out_dir = "build/demo/train"
keras_backend = "jax"
cpu_devices = 0  # >0: emulate this many JAX CPU devices (tests of the multi-device path)
model = {"backbone": "demo-tiny", "embedding_dim": 64, "dropout": 0.0, "head": {"kind": "arcface", "scale": 16.0, "margin": 0.1}}
# "" = random init; "kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3" (attached Kaggle
# Model), "open_clip:laion2b_s32b_b79k", or a local open_clip .bin/.safetensors (docs/backbone.md)
backbone_weights = ""
train = {"epochs": 10, "batch_size": 64, "learning_rate": 3e-3}

# %%
from guie_nb.notebook import plot_history, use_backend

use_backend(keras_backend, cpu_devices)

import keras

from guie_nb.model.embedding import ModelConfig
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import train as run_training

model_cfg = ModelConfig.from_dict({**model, "backbone_weights": backbone_weights})
train_cfg = TrainConfig.from_dict(train)
print("Keras", keras.__version__, "on", keras.backend.backend())

# %% [markdown]
# ## Train
# The held-out queries are scored before training and after every epoch (modified mP@5, overall
# and per source), so the first line below is the untrained model's score.

# %%
metrics = run_training(data_dir, out_dir, model_cfg, train_cfg)

# %%
print(f"mP@5 before training {metrics['initial']['map5']:.4f} -> after {metrics['final']['map5']:.4f}")
print(f"{metrics['images_per_second']:.1f} images/s on {metrics['backend']}")
plot_history(f"{out_dir}/history.csv", f"{out_dir}/history.png");
