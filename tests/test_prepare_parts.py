"""Data-prep split over N parts (one Kaggle kernel each) and read back as one data set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.data.prepare import OutputTooLarge, load_manifest, prepare, train_paths

SPEC = DemoSpec(products_classes=8, landmark_classes=6, views_per_class=5, min_side=48, max_side=72)
ARGS = dict(max_side=48, images_per_shard=8, seed=0, processes=1, progress=False)


def _sources(roots: dict[str, Path], val_classes: int = 2) -> list[dict]:
    return [{"kind": "products10k", "root": str(roots["products10k"]), "val_classes": val_classes},
            {"kind": "gldv2", "root": str(roots["gldv2"]), "val_classes": val_classes}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run into `one/`; the same data-prep as 2 parts into `p0/`, `p1/`."""
    root = tmp_path_factory.mktemp("parts")
    roots = write_demo_sources(root / "raw", SPEC)
    sources = _sources(roots)
    one = prepare(sources, root / "one", **ARGS)
    parts = [prepare(sources, root / f"p{i}", num_shards=2, shard_index=i, **ARGS) for i in range(2)]
    return root, roots, sources, one, parts


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "manifest.json"}


def test_parts_hold_exactly_the_one_run_output(runs):
    from guie_nb.data.shard_reader import read_all

    root, _, _, one, (p0, p1) = runs
    assert len(one["train_files"]) == 7  # 50 training images, 8 per shard
    # contiguous, balanced: 3 + 4 shards under their one-run names, byte for byte
    assert p0["train_files"] == one["train_files"][:3] and p1["train_files"] == one["train_files"][3:]
    a, b0, b1 = _files(root / "one"), _files(root / "p0"), _files(root / "p1")
    assert not set(b0) & set(b1) and {**b0, **b1} == a
    assert {"val-queries.tfrec", "val-index.tfrec", "solution.csv"} <= set(b0) and not any(
        n.startswith(("val-", "solution")) for n in b1)
    assert p1["val"] == {"in_part": 0}
    labels = {k: one[k] for k in ("num_classes", "label_maps")}
    assert {k: p0[k] for k in labels} == labels == {k: p1[k] for k in labels}
    assert p0["part"] == {"index": 0, "count": 2, "label_space": one["part"]["label_space"]}
    assert p1["part"] == {**p0["part"], "index": 1} and one["part"]["count"] == 1

    merged = load_manifest([root / "p1", root / "p0"])  # any order
    assert merged["data_dirs"] == [str((root / f"p{i}").resolve()) for i in range(2)]
    assert all(Path(f).is_absolute() for f in merged["train_files"])
    for key in ("num_classes", "label_maps", "train_images", "images_written", "sources", "skipped_counts"):
        assert merged[key] == one[key], key
    assert sorted(map(json.dumps, merged["skipped"])) == sorted(map(json.dumps, one["skipped"]))
    assert {k: v for k, v in merged["val"].items() if k not in ("queries", "index", "solution")} == \
        {k: v for k, v in one["val"].items() if k not in ("queries", "index", "solution")}
    assert merged["output_bytes"] == one["output_bytes"]
    # the same records (image bytes, label, source, id) in the same order
    one_records = read_all(train_paths(root / "one", one))
    assert read_all(train_paths([root / "p0", root / "p1"], merged)) == one_records
    assert len(one_records) == merged["train_images"] == 50
    # a single directory (or a list of one) still reads as before: names relative to it
    assert load_manifest(root / "one") == one == load_manifest([str(root / "one")])
    assert one["train_files"][0] == "train-00000-of-00007.tfrec"


def test_merged_validation_set_and_training_stream(runs):
    import tensorflow as tf

    from guie_nb.data.pipeline import train_dataset
    from guie_nb.data.shard_reader import parse
    from guie_nb.evaluation import ValidationSet

    root, _, _, one, _ = runs
    dirs = [root / "p0", root / "p1"]
    merged = load_manifest(dirs)
    val = ValidationSet.from_manifest(dirs, merged)
    ref = ValidationSet.from_manifest(root / "one", one)
    assert val.query_files == [(root / "p0" / "val-queries.tfrec").resolve()]
    assert val.index_files == [(root / "p0" / "val-index.tfrec").resolve()]
    assert (val.solution, val.query_source) == (ref.solution, ref.query_source)
    assert len(val.solution) == 4  # 2 held-out classes x 2 sources, 1 query each
    with pytest.raises(ValueError, match="in part 0"):
        ValidationSet.from_manifest(root / "p1", json.loads((root / "p1" / "manifest.json").read_text()))

    files = train_paths(dirs, merged)
    labels = [int(parse(r)["label"]) for r in tf.data.TFRecordDataset([str(f) for f in files])]
    counts = np.bincount(labels, minlength=merged["num_classes"])  # the records written, part by part
    expected = np.zeros(merged["num_classes"], np.int64)
    for name, s in merged["sources"].items():
        for c, n in s["class_counts"].items():
            expected[merged["label_maps"][name][c]] = n
    assert counts.tolist() == expected.tolist() and counts.sum() == 50

    def batches(fs):
        ds = train_dataset(fs, size=32, batch_size=8, seed=3, epoch=1, steps=3)
        return [(x["image"].numpy(), y.numpy()) for x, y in ds]

    got, want = batches(files), batches(train_paths(root / "one", one))
    assert len(got) == 3
    for (gx, gy), (wx, wy) in zip(got, want):  # the one-run stream, batch for batch
        np.testing.assert_array_equal(gy, wy)
        np.testing.assert_array_equal(gx, wx)


def test_part_rerun_is_identical_and_parts_need_their_own_dirs(runs):
    root, _, sources, _, (_, p1) = runs
    before = {p.name: p.stat().st_mtime_ns for p in (root / "p1").glob("train-*")}
    files = _files(root / "p1")
    again = prepare(sources, root / "p1", num_shards=2, shard_index=1, **ARGS)
    assert _files(root / "p1") == files and again == p1
    assert {p.name: p.stat().st_mtime_ns for p in (root / "p1").glob("train-*")} == before  # kept, not redone
    with pytest.raises(ValueError, match="holds part 1 of 2 .* its own out_dir"):
        prepare(sources, root / "p1", num_shards=2, shard_index=0, **ARGS)
    assert _files(root / "p1") == files


@pytest.mark.parametrize("num_shards, shard_index, match", [
    (2, 2, r"shard_index must be an int in 0\.\.1 \(num_shards=2\), got 2"),
    (3, -1, r"shard_index must be an int in 0\.\.2"),
    (0, 0, r"num_shards must be an int >= 1"),
])
def test_bad_part_values(tmp_path, num_shards, shard_index, match):
    with pytest.raises(ValueError, match=match):
        prepare([{"kind": "products10k", "root": str(tmp_path / "nowhere")}], tmp_path / "out",
                num_shards=num_shards, shard_index=shard_index, progress=False)
    assert not (tmp_path / "out").exists()


def test_parts_that_do_not_belong_together(runs, tmp_path):
    root, _, sources, _, _ = runs
    other = tmp_path / "seed1-p1"
    prepare(sources, other, num_shards=2, shard_index=1, **{**ARGS, "seed": 1})
    with pytest.raises(ValueError, match="different data-preps") as e:
        load_manifest([root / "p0", other])
    assert str(root / "p0") in str(e.value) and str(other) in str(e.value)

    copy = tmp_path / "p0-copy"
    shutil.copytree(root / "p0", copy)
    with pytest.raises(ValueError, match=r"missing part\(s\) \[1\]; part 0 given twice") as e:
        load_manifest([root / "p0", copy])
    assert str(copy) in str(e.value)
    with pytest.raises(ValueError, match="is part 0 of 2 .* pass all 2 part directories"):
        load_manifest(root / "p0")
    with pytest.raises(ValueError, match="not all directories are parts"):
        (tmp_path / "old").mkdir()
        manifest = json.loads((root / "one" / "manifest.json").read_text())
        del manifest["part"]  # a manifest from before split data-prep
        (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
        load_manifest([root / "p0", tmp_path / "old"])
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_manifest([root / "p0", tmp_path])


def test_each_part_estimate_is_its_share_and_is_what_is_checked(runs, tmp_path):
    _, roots, _, _, _ = runs
    sources = _sources(roots, val_classes=0)  # the validation split would sit in part 0 only
    one = prepare(sources, tmp_path / "whole", **ARGS)
    whole = one["estimated_bytes"]
    parts = [prepare(sources, tmp_path / f"p{i}", num_shards=3, shard_index=i, **ARGS) for i in range(3)]
    shares = [p["estimated_bytes"] / whole for p in parts]
    assert [p["train_images"] for p in parts] == [24, 24, 22]  # 70 images, 9 shards: 3 + 3 + 3
    for p, share in zip(parts, shares):
        assert share == pytest.approx(p["train_images"] / one["train_images"], rel=0.2), shares
    print("estimate shares of the whole:", [round(s, 3) for s in shares])
    assert sum(shares) == pytest.approx(1, rel=0.15), shares
    # a limit the whole run is over but each part fits: the parts are written, the whole refused
    limit_gb = 0.6 * whole / 1e9
    with pytest.raises(OutputTooLarge, match="over the"):
        prepare(sources, tmp_path / "refused", **{**ARGS, "max_output_gb": limit_gb})
    assert not (tmp_path / "refused").exists()
    for i in range(3):
        prepare(sources, tmp_path / f"p{i}", num_shards=3, shard_index=i, **{**ARGS, "max_output_gb": limit_gb})
    with pytest.raises(OutputTooLarge, match=r"part 1 of 2: estimated .*more kernels \(num_shards=2\)"):
        prepare(sources, tmp_path / "half", num_shards=2, shard_index=1, **{**ARGS, "max_output_gb": 0.3 * whole / 1e9})


@pytest.mark.slow  # two short training runs: about a minute on 2 busy cores
def test_training_on_the_parts_is_training_on_the_one_run(runs, tmp_path):
    """`trainer.train` over the part directories: same validation split, same batches, same weights."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig
    from guie_nb.training.trainer import train

    root = runs[0]
    model = ModelConfig(dropout=0.0, head={"kind": "cosface", "scale": 16.0, "margin": 0.1})
    cfg = TrainConfig(epochs=1, batch_size=8, steps_per_epoch=2, learning_rate=1e-3, checkpoint_every=2)
    one = train(root / "one", tmp_path / "one", model, cfg)
    parts = train([str(root / "p1"), root / "p0"], tmp_path / "parts", model, cfg)
    assert parts["step"] == one["step"] == 2 and parts["num_classes"] == one["num_classes"]
    assert set(one["final"]) >= {"map5", "map5_products10k", "map5_gldv2"}
    for key in ("initial", "final"):  # the same validation split, before and after the same steps
        assert parts[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in
               (_history(tmp_path / "one"), _history(tmp_path / "parts"))]
    assert history[0] == pytest.approx(history[1], rel=1e-5), history


def _history(out: Path) -> dict:
    import csv

    with (out / "history.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    return {k: float(v) for k, v in row.items()}
