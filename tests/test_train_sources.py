"""TrainConfig.train_sources: training reads only the named data-prep sources' classes (their label
blocks), an epoch is one pass over their images, validation is unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from guie_nb.data.prepare import load_manifest, source_labels, train_paths
from guie_nb.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from _training_helpers import make_small_data  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("train_sources"))


def test_source_labels_are_each_sources_block(data_dir):
    manifest = load_manifest(data_dir)
    p, g = manifest["sources"]["products10k"], manifest["sources"]["gldv2"]
    ranges, images = source_labels(manifest, ["gldv2"])
    assert ranges == [(g["label_offset"], g["label_offset"] + g["train_classes"])]
    assert images == g["train_images"] > 0
    both, n = source_labels(manifest, ["gldv2", "products10k"])
    assert both == [(0, p["train_classes"]), (p["train_classes"], manifest["num_classes"])]
    assert n == manifest["train_images"]
    with pytest.raises(ValueError, match=r"\['shopee'\].*choose from \['gldv2', 'products10k'\]"):
        source_labels(manifest, ["shopee"])


def test_train_dataset_keeps_only_the_named_sources(data_dir):
    from guie_nb.data.pipeline import train_dataset

    manifest = load_manifest(data_dir)
    ranges, images = source_labels(manifest, ["products10k"])
    ds = train_dataset(train_paths(data_dir, manifest), 32, batch_size=4, label_ranges=ranges)
    labels = np.concatenate([y.reshape(-1) for _, y in ds.as_numpy_iterator()])
    start, stop = ranges[0]
    assert labels.size == images // 4 * 4  # one pass over the subset, remainder dropped
    assert labels.min() >= start and labels.max() < stop
    assert len(np.unique(labels)) == stop - start  # every class of the subset, nothing else


def test_train_sources_must_be_a_list_of_names():
    assert TrainConfig(train_sources=["products10k"]).train_sources == ["products10k"]
    for bad in ("products10k", [], [""]):
        with pytest.raises(ValueError, match="train_sources"):
            TrainConfig(train_sources=bad)
    # unset, the fingerprint is the one of checkpoints written before the field existed
    assert "train_sources" not in TrainConfig().fingerprint()
    assert "train_sources" in TrainConfig(train_sources=["gldv2"]).fingerprint()


def test_training_on_one_source_counts_its_images(data_dir, tmp_path):
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.trainer import train

    manifest = load_manifest(data_dir)
    _, images = source_labels(manifest, ["gldv2"])
    cfg = TrainConfig(epochs=1, batch_size=8, steps_per_execution=1, train_sources=["gldv2"])
    metrics = train(data_dir, tmp_path / "run", ModelConfig(backbone="demo-tiny", dropout=0.0), cfg,
                    stop_after_steps=1)
    assert metrics["step"] == 1 and metrics["total_steps"] == images // 8 < manifest["train_images"] // 8
    with pytest.raises(ValueError, match="train_sources"):
        train(data_dir, tmp_path / "bad", ModelConfig(backbone="demo-tiny"),
              TrainConfig(epochs=1, batch_size=8, train_sources=["imagenet"]))
