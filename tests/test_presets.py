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
from guie_nb.notebook_build import build_notebook, check_parameters
from guie_nb.stages import notebook_of, training_keys

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402

ALL = ["demo", "demo_stages", "fifth_place", "first_place", "fourth_place", "host_baseline", "second_place",
       "seed_recipe", "third_place"]
ONE_STEP = {"batch_size": 16, "epochs": 1, "steps_per_epoch": 1, "steps_per_execution": 1, "checkpoint_every": 0}


def test_the_presets_exist():
    assert set(ALL) <= set(presets.available())


@pytest.mark.parametrize("name", ALL)
def test_preset_parameters_fit_the_notebooks(name):
    params = presets.notebook_params(name, "build/x")
    for key, values in params.items():
        nb = build_notebook(HERE.parent / "notebooks" / f"{notebook_of(key)}.py")
        check_parameters(nbformat.from_dict(nb), values, key)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("presets"))


def _demo_scale(model: dict, train: dict, image_size=None):
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig

    cfg = ModelConfig.from_dict({**model, "backbone": "demo-tiny", "backbone_weights": "", "image_size": image_size})
    return cfg, TrainConfig.from_dict({**train, **ONE_STEP})


def _demo_size(image_size: int | None, native: int) -> int | None:
    """A preset's resolution step scaled like the backbone (ViT-H's 224 -> demo-tiny's 64)."""
    return None if image_size is None else native * image_size // 224 // 8 * 8


@pytest.mark.parametrize("name", ALL)
def test_preset_trains_one_step_at_demo_scale(name, data_dir, tmp_path):
    """Every training kernel of the preset, in chain order, one step each: each 02 kernel (a branch)
    from its own model, each later stage from the run its `init_dir` names (its model changes
    applied, the resolution scaled), as the notebooks chain them."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.params import apply_model_changes
    from guie_nb.training.trainer import train

    params = presets.notebook_params(name, str(tmp_path))
    keys = training_keys(params)
    runs: dict[str, Path] = {}  # the preset's out_dir -> where this test trained it
    for key in keys:
        values, out = params[key], tmp_path / "runs" / key.replace(":", "-")
        if notebook_of(key) == "02_train_tpu":
            model_cfg, train_cfg = _demo_scale(values["model"], values["train"])
            native = model_cfg.input_size
            if values["model"].get("image_size"):
                model_cfg = replace(model_cfg, image_size=_demo_size(values["model"]["image_size"], native))
            metrics = train(data_dir, out, model_cfg, train_cfg)
            assert metrics["step"] == 1 and metrics["train_step_compilations"] == 1, key
            assert (out / "embedding.weights.h5").is_file()
        else:  # a later stage (03_finetune), from the run it names
            init = runs[values["init_dir"]]
            changes = dict(values.get("model_changes") or {})
            changes.pop("patch_stride", None)  # demo-tiny's patch is 8: the preset's stride is for 14
            native = ModelConfig(backbone="demo-tiny").input_size
            if changes.get("image_size") or values.get("image_size"):
                changes["image_size"] = _demo_size(changes.get("image_size") or values["image_size"], native)
            ft_cfg = ModelConfig.from_dict(apply_model_changes(
                ModelConfig.load(init / "model_config.json").to_dict(), changes))
            _, ft_train = _demo_scale({"backbone": "demo-tiny"}, values["train"])
            metrics = train(data_dir, out, ft_cfg, ft_train, init_dir=init)
            assert metrics["step"] == 1, key
            saved = json.loads((out / "model_config.json").read_text())
            assert saved["image_size"] == ft_cfg.image_size and saved["head"] == ft_cfg.to_dict()["head"], key
        runs[values["out_dir"]] = out
