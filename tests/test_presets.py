"""Every preset: its parameters fit the notebooks, and its model and training recipe build and run
one step at demo scale (backbone swapped for demo-tiny, a small batch, one step)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from guie_nb import presets
from guie_nb.notebook_build import NOTEBOOK_ORDER, build_notebook, check_parameters

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402

ALL = ["demo", "fifth_place", "first_place", "host_baseline", "seed_recipe"]
ONE_STEP = {"batch_size": 16, "epochs": 1, "steps_per_epoch": 1, "steps_per_execution": 1, "checkpoint_every": 0}


def test_the_presets_exist():
    assert set(ALL) <= set(presets.available())


@pytest.mark.parametrize("name", ALL)
def test_preset_parameters_fit_the_notebooks(name):
    params = presets.notebook_params(name, "build/x")
    for nb_name in NOTEBOOK_ORDER:
        nb = build_notebook(HERE.parent / "notebooks" / f"{nb_name}.py")
        check_parameters(nbformat.from_dict(nb), params[nb_name], nb_name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("presets"))


def _demo_scale(model: dict, train: dict, image_size=None):
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig

    cfg = ModelConfig.from_dict({**model, "backbone": "demo-tiny", "backbone_weights": "", "image_size": image_size})
    return cfg, TrainConfig.from_dict({**train, **ONE_STEP})


@pytest.mark.parametrize("name", ALL)
def test_preset_trains_one_step_at_demo_scale(name, data_dir, tmp_path):
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.trainer import train

    params = presets.notebook_params(name, str(tmp_path))
    p2 = params["02_train_tpu"]
    model_cfg, train_cfg = _demo_scale(p2["model"], p2["train"])
    metrics = train(data_dir, tmp_path / "train", model_cfg, train_cfg)
    assert metrics["step"] == 1 and metrics["train_step_compilations"] == 1
    assert (tmp_path / "train" / "embedding.weights.h5").is_file()

    p3 = params["03_finetune"]
    if p3.get("image_size"):  # the resolution step of the fine-tune, scaled like the backbone (224 -> 280)
        size = model_cfg.input_size * p3["image_size"] // 224 // 8 * 8
        ft_cfg = replace(ModelConfig.load(tmp_path / "train" / "model_config.json"), image_size=size)
        _, ft_train = _demo_scale(p2["model"], p3["train"])
        metrics = train(data_dir, tmp_path / "finetune", ft_cfg, ft_train, init_dir=tmp_path / "train")
        assert metrics["step"] == 1
        saved = json.loads((tmp_path / "finetune" / "model_config.json").read_text())
        assert saved["image_size"] == size > model_cfg.input_size
