"""Class resampling (`TrainConfig.min_draws_per_class`, guie_nb.data.resampling): the drawn class
frequencies match max(n_c, m) / sum_k max(n_k, m); off, the stream is the one of before; the stream
is the same split over processes and resumed mid-epoch; bad values are refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from guie_nb.data import resampling
from guie_nb.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from _training_helpers import make_small_data  # noqa: E402

COUNTS = np.array([1, 3, 7, 40])  # very unequal classes: 51 images
MIN_IMAGES = 10  # repeat factors 10, 3.33, 1.43, 1: two classes rounded stochastically
TARGET = np.array([10, 10, 10, 40]) / 70  # max(n_c, m) / sum


@pytest.fixture(scope="module")
def unequal_files(tmp_path_factory) -> list[str]:
    """Two TFRecord shards of 8x8 JPEGs, labels as COUNTS, each image its own colour."""
    import tensorflow as tf

    from guie_nb.data.tfrecord_format import encode_example

    root = tmp_path_factory.mktemp("unequal")
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    np.random.default_rng(0).shuffle(labels)
    files = [root / f"train-{i}.tfrecord" for i in range(2)]
    for f, part in zip(files, np.array_split(np.arange(len(labels)), 2)):
        with tf.io.TFRecordWriter(str(f)) as w:
            for i in part:
                pixels = tf.fill([8, 8, 3], tf.constant(i * 5 % 256, tf.uint8))
                w.write(encode_example({"image": tf.io.encode_jpeg(pixels).numpy(), "label": int(labels[i]),
                                        "source": b"test", "image_id": f"{i:016d}".encode(),
                                        "original_height": 8, "original_width": 8}))
    return [str(f) for f in files]


def test_repeat_factors_and_frequencies():
    np.testing.assert_allclose(resampling.repeat_factors(COUNTS, MIN_IMAGES), [10, 10 / 3, 10 / 7, 1])
    np.testing.assert_allclose(resampling.class_frequencies(COUNTS, MIN_IMAGES), TARGET)
    assert resampling.epoch_images(COUNTS, MIN_IMAGES) == 70
    assert resampling.epoch_images(COUNTS, 0) == resampling.epoch_images(COUNTS, 1) == COUNTS.sum()
    # a class without images is never drawn; label ranges keep only their classes' draws
    np.testing.assert_allclose(resampling.repeat_factors(np.array([0, 5]), 10), [1, 2])
    assert resampling.epoch_images(COUNTS, MIN_IMAGES, label_ranges=[(1, 3)]) == 20
    np.testing.assert_allclose(resampling.class_frequencies(COUNTS, MIN_IMAGES, [(2, 4)]), [0, 0, 0.2, 0.8])


def test_size_histogram_gives_the_same_epoch():
    hist = resampling.size_histogram([3, 40, 3, 0, 7])
    assert hist == {"0": 1, "3": 2, "7": 1, "40": 1}
    assert resampling.histogram_epoch_images(hist, 10) == resampling.epoch_images(np.array([3, 40, 3, 0, 7]), 10) == 70
    assert resampling.histogram_epoch_images(hist, 0) == 53


@pytest.mark.parametrize("bad", [-1, 2.5, "20", True, None])
def test_bad_min_images_is_refused(bad):
    with pytest.raises(ValueError, match="min_draws_per_class must be an integer >= 0"):
        TrainConfig(min_draws_per_class=bad)
    with pytest.raises(ValueError, match="min_draws_per_class"):
        resampling.repeat_factors(COUNTS, bad)


def test_config_field():
    with pytest.raises(ValueError, match="class counts"):
        resampling.repeat_factors(np.array([3, -1]), 10)
    with pytest.raises(ValueError, match="unknown training parameter.*min_image_per_class"):
        TrainConfig.from_dict({"min_image_per_class": 20})  # a typo names itself
    # off, the fingerprint is the one of checkpoints written before the field existed
    assert "min_draws_per_class" not in TrainConfig().fingerprint()
    assert '"min_draws_per_class": 20' in TrainConfig(min_draws_per_class=20).fingerprint()


def _labels(ds) -> np.ndarray:
    return np.concatenate([y.reshape(-1) for _, y in ds.as_numpy_iterator()])


def test_drawn_frequencies_match_the_target(unequal_files):
    """~21,000 draws of the record-level sampler (300 passes over the 51 records): each class's
    share is within 0.005 of max(n_c, m) / sum (the stochastic rounding alone varies it: the
    standard deviation of the shares is ~0.0013 here, over 10 seeds); then 20 epochs through `train_dataset`
    (decode, augment, batch) within 0.02 (~1,400 draws, remainders dropped)."""
    import tensorflow as tf

    from guie_nb.data.pipeline import train_dataset

    factors = resampling.repeat_factors(COUNTS, MIN_IMAGES)
    raw = tf.data.TFRecordDataset(unequal_files).repeat(300)
    labels = _raw_labels(resampling.repeat_records(raw, factors, seed=7))
    share = np.bincount(labels, minlength=len(COUNTS)) / labels.size
    assert abs(labels.size - 300 * 70) < 0.01 * 300 * 70
    np.testing.assert_allclose(share, TARGET, atol=0.005)
    plain = np.bincount(_raw_labels(raw)) / (300 * 51)
    assert abs(plain[0] - TARGET[0]) > 0.1  # without resampling the frequencies are far from it

    labels = np.concatenate([_labels(train_dataset(unequal_files, 16, batch_size=10, seed=1, epoch=e,
                                                   class_repeats=factors)) for e in range(20)])
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / labels.size, TARGET, atol=0.02)


def _raw_labels(raw) -> np.ndarray:
    """The labels of serialized records, read in batches (an element at a time is slow)."""
    import tensorflow as tf

    from guie_nb.data.shard_reader import FEATURES

    spec = {"label": FEATURES["label"]}
    ds = raw.batch(4096).map(lambda r: tf.io.parse_example(r, spec)["label"])
    return np.concatenate(list(ds.as_numpy_iterator()))


def test_repeat_factors_of_one_are_the_plain_stream(unequal_files):
    """Every factor 1 (what min_draws_per_class 0 or 1 means): the same batches, pixels included,
    as without the sampler; min_draws_per_class 0 does not build the sampler at all."""
    from guie_nb.data.pipeline import train_dataset

    kwargs = dict(size=16, batch_size=8, seed=3, epoch=2, steps=5, steps_per_execution=1)
    plain = list(train_dataset(unequal_files, **kwargs).as_numpy_iterator())
    ones = list(train_dataset(unequal_files, **kwargs, class_repeats=np.ones(4)).as_numpy_iterator())
    assert len(plain) == len(ones) == 5
    for (x, y), (x1, y1) in zip(plain, ones):
        np.testing.assert_array_equal(y, y1)
        np.testing.assert_array_equal(x["image"], x1["image"])


def test_resampled_stream_splits_over_processes_and_resumes(unequal_files):
    """Two simulated processes (rows 0:3 and 3:8 of every batch) decode together the one-process
    batches; resumed at step 2, the stream is the uninterrupted one's from step 2."""
    from guie_nb.data.pipeline import train_dataset

    factors = resampling.repeat_factors(COUNTS, MIN_IMAGES)
    kwargs = dict(size=16, batch_size=8, seed=5, epoch=1, steps=6, steps_per_execution=2, class_repeats=factors)
    whole = list(train_dataset(unequal_files, **kwargs).as_numpy_iterator())
    parts = [list(train_dataset(unequal_files, **kwargs, rows=rows).as_numpy_iterator())
             for rows in (slice(0, 3), slice(3, 8))]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 3
    for w, p0, p1 in zip(whole, *parts):
        np.testing.assert_array_equal(np.concatenate([p0[1], p1[1]], axis=1), w[1])
        np.testing.assert_array_equal(np.concatenate([p0[0]["image"], p1[0]["image"]], axis=1), w[0]["image"])
    resumed = list(train_dataset(unequal_files, **kwargs, skip_steps=2).as_numpy_iterator())
    assert len(resumed) == 2
    for w, r in zip(whole[1:], resumed):
        np.testing.assert_array_equal(r[1], w[1])
        np.testing.assert_array_equal(r[0]["image"], w[0]["image"])
    other_epoch = _labels(train_dataset(unequal_files, **{**kwargs, "epoch": 2}))
    assert not np.array_equal(other_epoch, np.concatenate([w[1].reshape(-1) for w in whole]))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("resampling"))


def test_training_data_counts_the_resampled_epoch(data_dir):
    """The class counts come from the manifest (the records written); an epoch is sum max(n_c, m)."""
    import tensorflow as tf

    from guie_nb.data.shard_reader import parse
    from guie_nb.data.prepare import load_manifest, source_labels, train_paths
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.trainer import TrainingData

    manifest = load_manifest(data_dir)
    counts = resampling.manifest_class_counts(manifest)
    records = tf.data.TFRecordDataset([str(f) for f in train_paths(data_dir, manifest)])
    labels = np.array([int(parse(r)["label"]) for r in records])  # what was written, record by record
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=manifest["num_classes"]))
    model = ModelConfig(backbone="demo-tiny")
    plain = TrainingData.load(data_dir, model)
    assert plain.class_repeats is None and plain.train_images == manifest["train_images"]
    m = int(counts.max()) + 3  # every class repeated
    data = TrainingData.load(data_dir, model, min_draws_per_class=m)
    assert data.train_images == m * int((counts > 0).sum()) > manifest["train_images"]
    np.testing.assert_allclose(data.class_repeats, m / np.maximum(counts, 1) * (counts > 0) + (counts == 0))
    ranges, _ = source_labels(manifest, ["gldv2"])
    sub = TrainingData.load(data_dir, model, ["gldv2"], min_draws_per_class=m)
    assert sub.train_images == m * sum(int((counts[a:b] > 0).sum()) for a, b in ranges)


def test_training_steps_follow_the_resampled_epoch(data_dir, tmp_path):
    """The trainer's epoch (steps_per_epoch None) is the resampled stream's length over the batch."""
    from guie_nb.data.prepare import load_manifest
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.trainer import train

    manifest = load_manifest(data_dir)
    m = 12
    images = resampling.epoch_images(resampling.manifest_class_counts(manifest), m)
    cfg = TrainConfig(epochs=2, batch_size=8, steps_per_execution=1, min_draws_per_class=m)
    metrics = train(data_dir, tmp_path / "run", ModelConfig(backbone="demo-tiny", dropout=0.0), cfg,
                    stop_after_steps=1)
    assert metrics["step"] == 1 and metrics["total_steps"] == 2 * (images // 8) > 2 * (manifest["train_images"] // 8)


def test_cached_epochs_resample_the_rows():
    """The cached-embeddings path draws epochs as row indices: with repeat factors, a class's share
    over 200 epochs is within 0.01 of the target; without, each epoch is today's permutation."""
    from guie_nb.training.cached import epoch_indices

    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    repeats = resampling.repeat_factors(COUNTS, MIN_IMAGES)[labels]
    steps = resampling.epoch_images(COUNTS, MIN_IMAGES) // 10
    drawn = np.concatenate([labels[epoch_indices(0, e, len(labels), steps, 10, repeats).ravel()] for e in range(200)])
    np.testing.assert_allclose(np.bincount(drawn) / drawn.size, TARGET, atol=0.01)
    np.testing.assert_array_equal(epoch_indices(4, 3, 51, 7, 10, repeats), epoch_indices(4, 3, 51, 7, 10, repeats))
    plain = epoch_indices(0, 1, 51, 5, 10)
    np.testing.assert_array_equal(plain.ravel(), np.random.default_rng([0, 1]).permutation(51)[:50])


def test_cached_run_counts_the_resampled_epoch(data_dir, tmp_path):
    """A cached-embeddings run with min_draws_per_class: its epoch is the resampled one's steps."""
    from guie_nb.data.prepare import load_manifest
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.trainer import train

    manifest = load_manifest(data_dir)
    m = 12
    images = resampling.epoch_images(resampling.manifest_class_counts(manifest), m)
    cfg = TrainConfig(epochs=1, batch_size=8, freeze_backbone=True, cached_embeddings=True, checkpoint_every=0,
                      min_draws_per_class=m)
    metrics = train(data_dir, tmp_path / "run", ModelConfig(backbone="demo-tiny", dropout=0.0), cfg)
    assert metrics["steps_per_epoch"] == images // 8 > manifest["train_images"] // 8
