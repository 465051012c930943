"""The notebooks' pictures (guie_nb.plots) on tiny inputs: what each draws, and the PNG it saves."""

from __future__ import annotations

import csv
import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from guie_nb import plots
from guie_nb.evaluation import QueryResult


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _jpeg(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _write_records(path, records) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for image, label, source, image_id in records:
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
                "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _png_size(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_plots_draw_off_screen_outside_a_kernel():
    plots._pyplot()
    assert matplotlib.get_backend().lower() == "agg"


def test_sample_grid_shows_each_sources_stored_images_with_class_names(tmp_path):
    # three products, one landmark; the grid asks for 2 per source, so one product is left out
    _write_records(tmp_path / "train-0.tfrec", [
        (_jpeg("red", (40, 30)), 0, "products10k", "a" * 16),
        (_jpeg("blue", (30, 40)), 2, "gldv2", "b" * 16),
        (_jpeg("green"), 1, "products10k", "c" * 16),
        (_jpeg("white"), 1, "products10k", "d" * 16),
    ])
    manifest = {"train_files": ["train-0.tfrec"], "label_maps": {"products10k": {"shoe": 0, "mug": 1},
                                                                 "gldv2": {"tower": 2}},
                "sources": {"products10k": {}, "gldv2": {}}}
    fig = plots.sample_grid(tmp_path, manifest, tmp_path / "samples.png", per_source=2)
    titles = _titles(fig)
    # rows sorted by source name: gldv2 first, its second cell blank
    assert titles == ["tower\n30x40", "", "shoe\n40x30", "mug\n40x30"], titles
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["gldv2", "products10k"]
    red = fig.axes[2].get_images()[0].get_array()
    assert red.shape == (30, 40, 3) and red[..., 0].mean() > 200 and red[..., 2].mean() < 60
    assert _png_size(tmp_path / "samples.png") == (320, 380)


def test_class_counts_sorts_the_long_tail_and_goes_log_when_it_spans_a_lot(tmp_path):
    manifest = {"sources": {"flat": {"class_counts": {"a": 8, "b": 8, "c": 8}},
                            "tail": {"class_counts": {str(i): n for i, n in enumerate([3, 500, 1, 40])}}}}
    fig = plots.class_counts(manifest, tmp_path / "counts.png")
    flat, tail = fig.axes
    assert flat.get_yscale() == "linear" and tail.get_yscale() == "log"
    assert tail.get_title() == "tail: 4 classes, 544 images"
    heights = tail.patches[0].get_path().vertices[:, 1]
    assert max(heights) == 500
    _png_size(tmp_path / "counts.png")


def test_history_draws_a_curve_per_domain_from_epoch_zero(tmp_path):
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "loss", "learning_rate", "val_map5", "val_map5_gldv2", "val_map5_products10k"])
        w.writeheader()
        w.writerow({"epoch": 1, "loss": 5.0, "learning_rate": 1e-3, "val_map5": 0.3, "val_map5_gldv2": 0.2,
                    "val_map5_products10k": 0.4})
        w.writerow({"epoch": 2, "loss": 4.0, "learning_rate": 5e-4, "val_map5": 0.5, "val_map5_gldv2": 0.4,
                    "val_map5_products10k": 0.6})
    fig = plots.history(path, tmp_path / "history.png", initial={"map5": 0.1, "map5_gldv2": 0.05,
                                                                 "map5_products10k": 0.15})
    loss, lr, map5 = fig.axes
    assert list(lr.lines[0].get_ydata()) == [1e-3, 5e-4]
    curves = {line.get_label(): list(line.get_ydata()) for line in map5.lines}
    assert curves == {"all": [0.1, 0.3, 0.5], "gldv2": [0.05, 0.2, 0.4], "products10k": [0.15, 0.4, 0.6]}
    assert list(map5.lines[0].get_xdata()) == [0, 1, 2]
    assert map5.get_ylim() == pytest.approx((0, 0.72))  # 1.2 x the best score: low scores stay readable
    _png_size(tmp_path / "history.png")


def test_history_without_epochs_fails_by_name(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="history.csv has no epochs"):
        plots.history(tmp_path / "history.csv")


def test_retrieval_strips_frame_hits_green_and_misses_red(tmp_path):
    images = {i: np.full((20, 30, 3), 40 * n, np.uint8) for n, i in enumerate("qabcdr")}
    results = [QueryResult("q", "gldv2", list("abcde")[:4] + ["r"], [0.1, 0.2, 0.3, 0.4, 0.5],
                           [True, False, True, False, False], 0.4)]
    images["e"] = images["r"]
    fig = plots.retrieval_strips(results, images, tmp_path / "strip.png", title="examples")
    axes = fig.axes
    assert len(axes) == 6
    assert axes[0].get_title() == "query (gldv2)\nP@5 0.40"
    assert axes[1].get_title() == "1: hit\nd=0.10" and axes[2].get_title() == "2: miss\nd=0.20"
    frames = [matplotlib.colors.to_hex(ax.spines["top"].get_edgecolor()) for ax in axes]
    assert frames == [plots.QUERY, plots.HIT, plots.MISS, plots.HIT, plots.MISS, plots.MISS]
    assert _png_size(tmp_path / "strip.png")[0] == 1020
    with pytest.raises(ValueError, match="no queries"):
        plots.retrieval_strips([], images)


def test_domain_scores_bars_match_the_scores(tmp_path):
    after = {"map5": 0.5, "map5_products10k": 0.6, "map5_gldv2": 0.4}
    before = {"map5": 0.1, "map5_products10k": 0.12, "map5_gldv2": 0.08}
    fig = plots.domain_scores(after, tmp_path / "domains.png", baseline=before, labels=("untrained", "submission"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all", "gldv2", "products10k"]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [0.1, 0.08, 0.12, 0.5, 0.4, 0.6]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["untrained", "submission"]
    assert ax.get_ylim() == pytest.approx((0, 0.78))
    _png_size(tmp_path / "domains.png")
    with pytest.raises(ValueError, match="overall 'map5'"):
        plots.domain_scores({"map5_gldv2": 0.3})
