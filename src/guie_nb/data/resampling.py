"""Class resampling of the training stream (`TrainConfig.min_draws_per_class`): a class with
fewer than m training images is drawn m times per epoch, in expectation; larger classes once per image.
(Data-prep's per-source `min_images_per_class` is another thing: it drops classes below it.)

The recipe is the GUIE 2nd place's (rainbow-xiao/ECCV2022-ILR-workshop, `Data_Merge.ipynb`,
"Sample" then "Resample"): after capping every class at 100 images, each class with n < 20 images
was written into the training table floor(20 / n) times, plus (20 mod n) of its images once more,
so it has 20 rows; larger classes kept their rows. Per image, a class is repeated

    r_c = max(1, m / n_c)        (n_c: the class's training images, m = min_draws_per_class)

times, and class c's share of the draws is `max(n_c, m) / sum_k max(n_k, m)` (`class_frequencies`)
where sampling uniformly over images gives `n_c / sum_k n_k`.

Here the records are read once per epoch, in order (`guie_nb.data.pipeline.train_dataset`), so a
fractional repeat factor is rounded stochastically per record: floor(r_c) copies plus one more
with probability r_c - floor(r_c), as in LVIS's repeat-factor sampling (Gupta, Dollar and
Girshick, "LVIS: A Dataset for Large Vocabulary Instance Segmentation", CVPR 2019, appendix;
detectron2's `RepeatFactorTrainingSampler`). The differences from the 2nd place: a class is drawn m
times per epoch in expectation, not exactly, and the extra draws are fresh every epoch (theirs
were fixed once, offline). The coins are stateless random numbers keyed by (resample seed, the
record's position in the epoch's read order): every process of a multi-host run reads the same
records in the same order and so repeats the same ones; a resumed run repeats what the
uninterrupted run repeated.
"""

from __future__ import annotations

import numpy as np


def check_min_draws(min_draws: int) -> int:
    """`min_draws` as an int; ValueError unless it is an int >= 0 (0: no resampling)."""
    if isinstance(min_draws, bool) or not isinstance(min_draws, (int, np.integer)) or min_draws < 0:
        raise ValueError(f"min_draws_per_class must be an integer >= 0 (0: no class resampling), "
                         f"got {min_draws!r}")
    return int(min_draws)


def _check_counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError(f"class counts must be a 1-D array of integers >= 0, got {counts.dtype} {counts.shape}")
    return counts


def repeat_factors(counts: np.ndarray, min_draws: int) -> np.ndarray:
    """float64 `[classes]`: r_c = max(1, min_draws / n_c) from int `counts` `[classes]` (training
    images per class); 1 for a class without images (never read, so never repeated). ValueError for
    negative counts or a bad `min_draws`."""
    counts, m = _check_counts(counts), check_min_draws(min_draws)
    return np.where(counts > 0, np.maximum(1.0, m / np.maximum(counts, 1)), 1.0)


def _in_ranges(num_classes: int, label_ranges: list[tuple[int, int]] | None) -> np.ndarray:
    keep = np.zeros(num_classes, bool) if label_ranges is not None else np.ones(num_classes, bool)
    for start, stop in label_ranges or []:
        keep[start:stop] = True
    return keep


def expected_draws(counts: np.ndarray, min_draws: int,
                   label_ranges: list[tuple[int, int]] | None = None) -> np.ndarray:
    """float64 `[classes]`: the expected draws of each class in one resampled epoch, `max(n_c, m)`
    for a class with images (0 without), 0 outside `label_ranges` (`[start, stop)` label blocks,
    `TrainConfig.train_sources`; None: all classes)."""
    counts = _check_counts(counts)
    draws = np.where(counts > 0, counts * repeat_factors(counts, min_draws), 0.0)
    return np.where(_in_ranges(len(counts), label_ranges), draws, 0.0)


def class_frequencies(counts: np.ndarray, min_draws: int,
                      label_ranges: list[tuple[int, int]] | None = None) -> np.ndarray:
    """float64 `[classes]` summing to 1: each class's expected share of the resampled draws,
    `max(n_c, m) / sum_k max(n_k, m)`. ValueError when no class has images."""
    draws = expected_draws(counts, min_draws, label_ranges)
    if draws.sum() <= 0:
        raise ValueError("no training images in the selected classes")
    return draws / draws.sum()


def epoch_images(counts: np.ndarray, min_draws: int, label_ranges: list[tuple[int, int]] | None = None) -> int:
    """The images of one resampled epoch (expected draws, rounded down): what `steps_per_epoch`
    divides by the batch size. Equal to the plain image count for `min_draws` 0 (or 1)."""
    return int(np.floor(expected_draws(counts, min_draws, label_ranges).sum() + 1e-9))


def size_histogram(counts) -> dict[str, int]:
    """Classes by size: `{str(images): classes}` of an iterable of per-class image counts (JSON
    keys; what the data-prep dry run reports per source, `guie_nb.preflight`)."""
    sizes, classes = np.unique(np.asarray(list(counts), np.int64), return_counts=True)
    return {str(int(n)): int(k) for n, k in zip(sizes, classes)}


def histogram_epoch_images(histogram: dict[str, int], min_draws: int) -> int:
    """`epoch_images` of classes given as a `size_histogram`: sum of classes x max(size, m) over
    the sizes > 0 (the resampled epoch of data not yet written, e.g. a data-prep plan)."""
    m = check_min_draws(min_draws)
    return sum(int(k) * max(int(n), m) for n, k in histogram.items() if int(n) > 0)


def manifest_class_counts(manifest: dict) -> np.ndarray:
    """int64 `[num_classes]`: the training images of each global label, from data-prep's manifest
    (each source's `class_counts` by class name, mapped through `label_maps`; the counts of the
    records written, summed over the parts of a split data-prep). The same on every process."""
    counts = np.zeros(manifest["num_classes"], np.int64)
    for name, source in manifest["sources"].items():
        labels = manifest["label_maps"][name]
        for cls, n in source["class_counts"].items():
            counts[int(labels[cls])] = n
    return counts


def resampled_rows(rng: np.random.Generator, repeats: np.ndarray) -> np.ndarray:
    """int64 `[~sum(repeats)]`: the row indices of one resampled pass over rows with float repeat
    factors `repeats` `[n]` (`repeat_factors` of each row's label): row i floor(r_i) times, plus
    once more with probability r_i - floor(r_i) (drawn from `rng`), in row order. For the cached-
    embeddings path, which draws its epochs as index arrays (`guie_nb.training.cached.epoch_indices`)."""
    repeats = np.asarray(repeats, np.float64)
    whole = np.floor(repeats)
    times = whole.astype(np.int64) + (rng.random(len(repeats)) < repeats - whole)
    return np.repeat(np.arange(len(repeats)), times)


def repeat_records(ds: "tf.data.Dataset", factors: np.ndarray, seed: int, chunk: int = 256) -> "tf.data.Dataset":
    """Serialized training records -> each record `floor(r) + Bernoulli(r - floor(r))` times in a
    row, r = `factors[label]` (float `[classes]`, `repeat_factors`). The coins are stateless, drawn
    `chunk` records at a time (vectorised: a per-record map costs ~20x more CPU) and keyed by
    (`seed`, the chunk's number), so the stream is a function of `ds`'s order, `seed` and `chunk`.
    Put it before the shuffle: copies of a record leave the shuffle buffer spread over about a
    buffer's length of the stream (the 2nd place shuffled the whole table)."""
    import tensorflow as tf  # here: TrainConfig checks its values with this module, without TensorFlow

    from guie_nb.data.shard_reader import FEATURES

    factors = np.asarray(factors, np.float64)
    if factors.ndim != 1 or not np.all(np.isfinite(factors)) or (factors < 0).any():
        raise ValueError("repeat factors must be a 1-D array of finite values >= 0")
    table = tf.constant(factors)
    label_only = {"label": FEATURES["label"]}

    def copies(number, raws):
        r = tf.gather(table, tf.io.parse_example(raws, label_only)["label"])
        coins = tf.random.stateless_uniform(tf.shape(raws), seed=tf.stack([tf.constant(seed, tf.int64), number]),
                                            dtype=tf.float64)
        times = tf.floor(r) + tf.cast(coins < r - tf.floor(r), tf.float64)
        return tf.repeat(raws, tf.cast(times, tf.int64))

    return ds.batch(chunk).enumerate().map(copies, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
