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
    """Every training kernel of the preset, in chain order, one step each: the first from the
    preset's model, each later stage from the stage before (its model changes applied, the
    resolution scaled), as the notebooks chain them."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.params import apply_model_changes
    from guie_nb.training.trainer import train

    params = presets.notebook_params(name, str(tmp_path))
    keys = training_keys(params)
    first = params[keys[0]]
    model_cfg, train_cfg = _demo_scale(first["model"], first["train"])
    native = model_cfg.input_size
    if first["model"].get("image_size"):
        model_cfg = replace(model_cfg, image_size=_demo_size(first["model"]["image_size"], native))
    out = tmp_path / keys[0].replace(":", "-")
    metrics = train(data_dir, out, model_cfg, train_cfg)
    assert metrics["step"] == 1 and metrics["train_step_compilations"] == 1
    assert (out / "embedding.weights.h5").is_file()

    for key in keys[1:]:  # the later stages (03_finetune), each from the one before
        p3, init = params[key], out
        changes = dict(p3.get("model_changes") or {})
        changes.pop("patch_stride", None)  # demo-tiny's patch is 8: the preset's stride is for 14
        if changes.get("image_size") or p3.get("image_size"):
            changes["image_size"] = _demo_size(changes.get("image_size") or p3["image_size"], native)
        ft_cfg = ModelConfig.from_dict(apply_model_changes(ModelConfig.load(init / "model_config.json").to_dict(),
                                                           changes))
        _, ft_train = _demo_scale(first["model"], p3["train"])
        out = tmp_path / key.replace(":", "-")
        metrics = train(data_dir, out, ft_cfg, ft_train, init_dir=init)
        assert metrics["step"] == 1, key
        saved = json.loads((out / "model_config.json").read_text())
        assert saved["image_size"] == ft_cfg.image_size and saved["head"] == ft_cfg.to_dict()["head"], key
