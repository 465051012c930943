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
# # 3 · Fine-tune at a lower learning rate
#
# The seed solution gained +0.02 mP@5 from a final pass at a lower learning rate. This notebook
# starts from the training notebook's output (the embedding model *and* the margin head) and
# continues with the same data at a smaller learning rate.

# %% tags=["parameters"]
data_dir = "build/demo/data"
init_dir = "build/demo/train"
out_dir = "build/demo/finetune"
keras_backend = "jax"
cpu_devices = 0
train = {"epochs": 3, "batch_size": 64, "learning_rate": 3e-4, "warmup_epochs": 0.0}

# %%
from guie_nb.notebook import plot_history, use_backend

use_backend(keras_backend, cpu_devices)

from guie_nb.model.embedding import ModelConfig
from guie_nb.training.config import TrainConfig
from guie_nb.training.trainer import train as run_training

model_cfg = ModelConfig.load(f"{init_dir}/model_config.json")
train_cfg = TrainConfig.from_dict(train)
print(model_cfg)

# %% [markdown]
# ## Continue training
# The first score printed is the training notebook's final model, re-measured here.

# %%
metrics = run_training(data_dir, out_dir, model_cfg, train_cfg, init_dir=init_dir)

# %%
print(f"mP@5 {metrics['initial']['map5']:.4f} -> {metrics['final']['map5']:.4f} after fine-tuning")
plot_history(f"{out_dir}/history.csv", f"{out_dir}/history.png");
