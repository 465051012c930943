"""The notebooks' pictures: one function per picture, each returning a matplotlib Figure and, given
`out_png`, also saving it there (100 dpi).

In a Jupyter kernel (Kaggle, papermill, nbmake) the inline backend shows every figure a cell made
when the cell ends, so a notebook calls the function and the picture appears in the output; outside
a kernel the figures are drawn with Agg (no display needed) and the caller closes them.

Pictures: `sample_grid` and `class_counts` (data-prep), `history` (training, fine-tuning),
`retrieval_strips` and `domain_scores` (export).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from guie_nb.data.prepare import DataDirs, data_path
from guie_nb.evaluation import QueryResult, decode_rgb, examples

HIT, MISS, QUERY = "#2ca02c", "#d62728", "#1f77b4"


def _pyplot():
    import matplotlib

    if "ipykernel" not in sys.modules:  # a script or a test: draw off-screen
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, out_png: str | Path | None):
    fig.tight_layout()
    if out_png:
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=100)
    return fig


def _show_image(ax, image: np.ndarray, title: str, frame: str | None = None, fontsize: float = 8) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_color(frame)
            spine.set_linewidth(4)


def _blank(ax, text: str = "") -> None:
    ax.axis("off")
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, transform=ax.transAxes)


# --- data-prep ------------------------------------------------------------------------------------

def train_samples(data_dir: DataDirs, manifest: Mapping, per_source: int = 8,
                  max_records: int = 20_000) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Up to `per_source` training images per source as written to the shards (decoded like the
    scorer, `[H, W, 3]` uint8), each with its class name in the source's own labels.

    The training stream is one shuffled stream over all sources, so the first records hold every
    source; reading stops once each source has its images, or after `max_records` records.
    Read without TensorFlow (`guie_nb.data.tfrecord_format`): the data-prep notebook does not load it.
    """
    names = {label: name for labels in manifest["label_maps"].values() for name, label in labels.items()}
    samples: dict[str, list[tuple[np.ndarray, str]]] = {s: [] for s in manifest["sources"]}
    files = [data_path(data_dir, f) for f in manifest["train_files"]]
    for n, ex in enumerate(examples(files)):
        if n >= max_records or all(len(v) >= per_source for v in samples.values()):
            break
        source, label = ex["source"][0].decode(), ex["label"][0]
        if len(samples.setdefault(source, [])) < per_source:
            samples[source].append((decode_rgb(ex["image"][0]), names.get(label, str(label))))
    return samples


def sample_grid(data_dir: DataDirs, manifest: Mapping, out_png: str | Path | None = None, per_source: int = 8,
                max_records: int = 20_000):
    """One row per source: `per_source` training images as written to the shards (after resize and
    conversion), titled with the class name and the stored size (width x height, px)."""
    plt = _pyplot()
    samples = train_samples(data_dir, manifest, per_source, max_records)
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, per_source, figsize=(1.6 * per_source, 1.9 * rows), squeeze=False)
    for row, (source, items) in zip(axes, sorted(samples.items())):
        for col, ax in enumerate(row):
            if col < len(items):
                image, name = items[col]
                _show_image(ax, image, f"{name[:18]}\n{image.shape[1]}x{image.shape[0]}")
            else:
                _blank(ax, f"{source}:\nno training images" if col == 0 and not items else "")
        row[0].set_ylabel(source, fontsize=10)
    fig.suptitle("training images as stored in the shards (class, width x height)", fontsize=10)
    return _finish(fig, out_png)


def class_counts(manifest: Mapping, out_png: str | Path | None = None):
    """Training images per class, classes sorted by count (the long tail), one panel per source;
    the y axis turns logarithmic when the counts span more than a factor of 20."""
    plt = _pyplot()
    sources = sorted(manifest["sources"].items())
    fig, axes = plt.subplots(1, max(1, len(sources)), figsize=(4.5 * max(1, len(sources)), 3.2), squeeze=False)
    for ax, (name, source) in zip(axes[0], sources):
        counts = np.sort(np.fromiter(source.get("class_counts", {}).values(), dtype=np.int64))[::-1]
        if not counts.size:
            _blank(ax, f"{name}: no training classes")
            continue
        ax.stairs(counts, np.arange(counts.size + 1), fill=True, color=QUERY)
        if counts[0] > 20 * max(1, counts[-1]):
            ax.set_yscale("log")
        ax.axhline(float(np.median(counts)), color="k", lw=0.8, ls="--", label=f"median {np.median(counts):g}")
        ax.set(title=f"{name}: {counts.size} classes, {int(counts.sum())} images", xlabel="class (by count)",
               ylabel=f"training images ({counts[-1]} to {counts[0]})", xlim=(0, counts.size))
        if ax.get_yscale() == "linear":
            ax.set_ylim(0, 1.15 * counts[0])
        ax.legend(fontsize=8, loc="upper right")
    return _finish(fig, out_png)


# --- training -------------------------------------------------------------------------------------

def history(history_csv: str | Path, out_png: str | Path | None = None, initial: Mapping[str, float] | None = None):
    """Training loss, learning rate and validation mP@5 per epoch (overall, and one curve per
    source domain) from the trainer's `history.csv`; `initial` (metrics.json's score before
    training, keys `map5`, `map5_<source>`) is drawn at epoch 0."""
    plt = _pyplot()
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{history_csv} has no epochs")
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_lr, ax_map) = plt.subplots(1, 3, figsize=(13, 3.5))
    ax_loss.plot(epochs, [float(r["loss"]) for r in rows], marker="o")
    ax_loss.set(title="training loss", xlabel="epoch")
    if "learning_rate" in rows[0]:
        ax_lr.plot(epochs, [float(r["learning_rate"]) for r in rows], marker="o", color="tab:orange")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.set(title="learning rate (at epoch end)", xlabel="epoch")
    for key in [k for k in rows[0] if k.startswith("val_map5")]:
        name = key.removeprefix("val_")
        xs, ys = list(epochs), [float(r[key]) for r in rows]
        if initial and name in initial:
            xs, ys = [0, *xs], [float(initial[name]), *ys]
        overall = name == "map5"
        ax_map.plot(xs, ys, marker="o", lw=2.5 if overall else 1.2, ls="-" if overall else "--",
                    color="k" if overall else None, label="all" if overall else name.removeprefix("map5_"))
    top = max(max(line.get_ydata()) for line in ax_map.lines) if ax_map.lines else 1.0
    ax_map.set(title="validation mP@5" + (" (epoch 0: the starting model)" if initial else ""), xlabel="epoch",
               ylim=(0, min(1.0, max(0.1, 1.2 * top))))  # low demo scores stay readable
    ax_map.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_lr, ax_map):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, out_png)


# --- export ---------------------------------------------------------------------------------------

def retrieval_strips(results: Sequence[QueryResult], images: Mapping[str, np.ndarray],
                     out_png: str | Path | None = None, title: str | None = None):
    """One row per query: the query (blue frame) and its nearest index images, nearest first, each
    framed green when it is a relevant image (a hit) and red otherwise, with its Euclidean distance.
    `images` maps query and index ids to `[H, W, 3]` images (`evaluation.read_images`)."""
    plt = _pyplot()
    if not results:
        raise ValueError("no queries to show")
    k = max(len(r.neighbours) for r in results)
    fig, axes = plt.subplots(len(results), k + 1, figsize=(1.7 * (k + 1), 2.0 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        _show_image(row[0], images[r.query_id], f"query ({r.source})\nP@{k} {r.precision:.2f}", QUERY)
        for rank, ax in enumerate(row[1:], 1):
            if rank > len(r.neighbours):
                _blank(ax)
                continue
            hit = r.hits[rank - 1]
            _show_image(ax, images[r.neighbours[rank - 1]],
                        f"{rank}: {'hit' if hit else 'miss'}\nd={r.distances[rank - 1]:.2f}", HIT if hit else MISS)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, out_png)


def domain_scores(scores: Mapping[str, float], out_png: str | Path | None = None,
                  baseline: Mapping[str, float] | None = None, labels: tuple[str, str] = ("before", "after")):
    """mP@5 overall and per source domain as bars (keys `map5`, `map5_<source>`); with `baseline`
    (e.g. the untrained model's scores), its bars stand beside them, labelled `labels`."""
    plt = _pyplot()
    keys = ["map5", *sorted(k for k in scores if k.startswith("map5_"))]
    if "map5" not in scores:
        raise ValueError(f"scores need an overall 'map5', got keys {sorted(scores)}")
    names = ["all" if k == "map5" else k.removeprefix("map5_") for k in keys]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2.5, 3.2))
    width = 0.4 if baseline else 0.6
    series = [(labels[0], baseline, "tab:gray", -width / 2), (labels[1], scores, QUERY, width / 2)] if baseline \
        else [(labels[1], scores, QUERY, 0.0)]
    top = 0.0
    for label, values, color, shift in series:
        heights = [float(values.get(k, np.nan)) for k in keys]
        bars = ax.bar(x + shift, heights, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        top = max([top, *(h for h in heights if np.isfinite(h))])
    ax.set_xticks(x, names)
    ax.set(title="held-out mP@5 per domain", ylabel="mP@5", ylim=(0, min(1.1, max(0.1, 1.3 * top))))
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, out_png)
