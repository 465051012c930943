"""Every source reader on small datasets written in the real layouts, and their early errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from _data_helpers import (gldv2_id, synset, write_aliproducts, write_csv_source, write_deepfashion_inshop,
                           write_folder, write_gldv2, write_gldv2_full, write_gpr1200, write_hm, write_imagenet,
                           write_imagenet_tfrecords, write_met, write_products10k, write_shopee)
from guie_nb.data import tfrecord_format
from guie_nb.data.prepare import prepare
from guie_nb.data.source_images import SourceError
from guie_nb.data.shard_writer import read_image_bytes
from guie_nb.data.sources import SourceSpec


def _read(kind, root, **options):
    return SourceSpec.from_dict({"kind": kind, "root": str(root), "options": options}).read()


def test_products10k(tmp_path):
    write_products10k(tmp_path, {5: 3, 9: 2})
    listing = _read("products10k", tmp_path)
    assert [(i.path.name, i.label, i.image_id) for i in listing.images] == [
        ("0.jpg", "5", "0.jpg"), ("1.jpg", "5", "1.jpg"), ("2.jpg", "5", "2.jpg"), ("3.jpg", "9", "3.jpg"),
        ("4.jpg", "9", "4.jpg")]
    assert all(i.path.is_file() for i in listing.images)


def test_gldv2_nested_layout(tmp_path):
    write_gldv2(tmp_path, {1000: 2, 1007: 1})
    listing = _read("gldv2", tmp_path)
    first = listing.images[0]
    assert first.image_id == gldv2_id(0) and first.label == "1000"
    assert first.path == tmp_path / "train" / first.image_id[0] / first.image_id[1] / first.image_id[2] / \
        f"{first.image_id}.jpg"
    assert all(i.path.is_file() for i in listing.images)


def test_imagenet_ilsvrc(tmp_path):
    write_imagenet(tmp_path, [3, 2])
    stray = tmp_path / "ILSVRC/Data/CLS-LOC/train/n99999999"
    stray.mkdir()
    (stray / "x.JPEG").write_bytes(b"x")
    listing = _read("imagenet", tmp_path)
    assert sorted({i.label for i in listing.images}) == [synset(0), synset(1)]
    assert {i.image_id for i in listing.images} >= {f"{synset(0)}_0", f"{synset(1)}_1"}
    assert listing.skipped == [{"path": str(stray / "x.JPEG"), "reason": "synset not in LOC_synset_mapping.txt"}]


def test_imagenet_ilsvrc_needs_mapping(tmp_path):
    write_imagenet(tmp_path, [2])
    (tmp_path / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(SourceError, match="LOC_synset_mapping.txt"):
        _read("imagenet", tmp_path)


def test_imagenet_tfrecord_model_garden(tmp_path):
    write_imagenet_tfrecords(tmp_path, [3, 2], files=2)
    listing = _read("imagenet_tfrecord", tmp_path)
    assert len(listing.images) == 5 and listing.skipped == []  # validation-* is not read
    assert sorted({i.label for i in listing.images}) == ["1", "2"]  # Model Garden labels start at 1
    assert {i.image_id for i in listing.images} == {f"{synset(c)}_{j}" for c, k in [(0, 3), (1, 2)] for j in range(k)}
    from _data_helpers import jpeg

    img = next(i for i in listing.images if i.image_id == f"{synset(1)}_1")
    assert img.offset >= 0 and read_image_bytes(img) == jpeg(70_000 + 100 + 1)  # the exact stored bytes
    val = _read("imagenet_tfrecord", tmp_path, pattern="validation-*")
    assert len(val.images) == 1


def test_imagenet_tfrecord_truncated_shard(tmp_path):
    write_imagenet_tfrecords(tmp_path, [4], files=1)
    shard = tmp_path / "train-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-100])
    listing = _read("imagenet_tfrecord", tmp_path)
    assert len(listing.images) == 3
    assert listing.skipped[0]["reason"].startswith("unreadable rest of TFRecord file")


def test_folder_per_class(tmp_path):
    write_folder(tmp_path, {"cat": 3, "dog": 2})
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    listing = _read("folder", tmp_path)
    assert sorted((i.label, i.image_id) for i in listing.images) == [
        ("cat", "cat/0.jpg"), ("cat", "cat/2.jpg"), ("cat", "cat/nested/1.jpg"), ("dog", "dog/0.jpg"),
        ("dog", "dog/nested/1.jpg")]


def test_csv_path_label(tmp_path):
    write_csv_source(tmp_path, {"a": 2, "b": 1})
    for root in (tmp_path, tmp_path / "labels.csv"):  # the folder or the CSV itself
        listing = _read("csv", root, csv_name="labels.csv")
        assert [(i.label, i.image_id) for i in listing.images] == [("a", "imgs/a_0.png"), ("a", "imgs/a_1.png"),
                                                                   ("b", "imgs/b_0.png")]
        assert all(i.path.is_file() for i in listing.images)


def test_gld2020_reads_the_kaggle_2020_layout(tmp_path):
    write_gldv2(tmp_path, {1000: 2, 1007: 1})
    listing = _read("gld2020", tmp_path)
    assert [(i.label, i.source) for i in listing.images] == [("1000", "gld2020"), ("1000", "gld2020"), ("1007", "gld2020")]
    assert all(i.path.is_file() for i in listing.images)


@pytest.mark.parametrize("clean", [True, False])
def test_gldv2_full_clean_and_full_csv(tmp_path, clean):
    write_gldv2_full(tmp_path, {5: 3, 77: 2}, clean=clean)
    listing = _read("gldv2_full", tmp_path)
    assert sorted((i.label, i.image_id) for i in listing.images) == sorted(
        [("5", gldv2_id(10_000 + n)) for n in range(3)] + [("77", gldv2_id(10_003 + n)) for n in range(2)])
    assert all(i.path.is_file() for i in listing.images)


def test_gldv2_full_needs_a_csv(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(SourceError, match="train_clean.csv"):
        _read("gldv2_full", tmp_path)


def test_shopee_skips_reposted_files(tmp_path):
    write_shopee(tmp_path, {249114794: 2, 2937985045: 3}, reposted=1)
    listing = _read("shopee", tmp_path)
    assert [(i.label, i.image_id) for i in listing.images] == [
        ("249114794", "train_0"), ("249114794", "train_1"), ("2937985045", "train_2"), ("2937985045", "train_3"),
        ("2937985045", "train_4")]
    assert all(i.path.is_file() and i.path.parent.name == "train_images" for i in listing.images)
    assert [e["reason"] for e in listing.skipped] == ["same image file as an earlier posting"]


@pytest.mark.parametrize("kaggle", [False, True])
def test_met_ground_truth_json(tmp_path, kaggle):
    write_met(tmp_path, {770869: 3, 12: 1}, kaggle=kaggle)
    listing = _read("met", tmp_path)
    assert [(i.label, i.image_id) for i in listing.images] == [
        ("770869", "MET/770869/0.jpg"), ("770869", "MET/770869/1.jpg"), ("770869", "MET/770869/2.jpg"),
        ("12", "MET/12/0.jpg")]
    assert all(i.path.is_file() for i in listing.images)


def test_aliproducts_train_json(tmp_path):
    write_aliproducts(tmp_path, {"00000": 2, "50029": 1})
    listing = _read("aliproducts", tmp_path)
    assert [(i.label, i.image_id, i.path.parent.name) for i in listing.images] == [
        ("00000", "00000_0.jpg", "00000"), ("00000", "00000_1.jpg", "00000"), ("50029", "50029_0.jpg", "50029")]
    assert all(i.path.is_file() for i in listing.images)


def test_hm_articles_and_zero_padded_folders(tmp_path):
    write_hm(tmp_path, {108775: 2, 956217: 2}, without_image=1)
    listing = _read("hm", tmp_path)
    first = listing.images[0]
    assert first.image_id == "0108775015" and first.label == "108775"
    assert first.path == tmp_path / "images" / "010" / "0108775015.jpg"
    assert [i.path.is_file() for i in listing.images] == [True, True, True, False]  # the last has no image
    by_article = _read("hm", tmp_path, label_column="article_id")
    assert len({i.label for i in by_article.images}) == 4


def test_deepfashion_inshop_partition(tmp_path):
    write_deepfashion_inshop(tmp_path, {"id_00000002": ["train", "train"], "id_00000080": ["query", "gallery", "gallery"]})
    listing = _read("deepfashion_inshop", tmp_path)
    assert [i.label for i in listing.images] == ["id_00000002"] * 2 + ["id_00000080"] * 3
    assert all(i.path.is_file() for i in listing.images)
    only = _read("deepfashion_inshop", tmp_path, splits=["query", "gallery"])
    assert {i.label for i in only.images} == {"id_00000080"}
    (tmp_path / "list_eval_partition.txt").write_text("3\nname item status\n")
    with pytest.raises(SourceError, match="image_name item_id evaluation_status"):
        _read("deepfashion_inshop", tmp_path)


def test_gpr1200_class_from_name_and_domains(tmp_path):
    write_gpr1200(tmp_path, [0, 199, 200, 1199], per_class=2)
    (tmp_path / "images" / "readme.txt").write_text("x")
    listing = _read("gpr1200", tmp_path)
    assert sorted({(i.label, i.domain) for i in listing.images}, key=lambda t: int(t[0])) == [
        ("0", "gpr1200_landmarks"), ("199", "gpr1200_landmarks"), ("200", "gpr1200_inat"), ("1199", "gpr1200_faces")]
    assert [e["reason"] for e in listing.skipped] == ["file name without a <class>_ prefix"]


ALL_KINDS = ["products10k", "gldv2", "gld2020", "gldv2_full", "imagenet", "imagenet_tfrecord", "shopee", "met",
             "aliproducts", "hm", "deepfashion_inshop", "gpr1200", "folder", "csv"]


def test_every_kind_is_tested_here():
    from guie_nb.data.sources import READERS

    assert sorted(READERS) == sorted(ALL_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_wrong_root_fails_before_any_work(tmp_path, kind):
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="not found|no files"):
        prepare([{"kind": kind, "root": str(tmp_path / "nope")}], out, processes=1, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("kind,csv_name,header", [("products10k", "train.csv", "name,group"),
                                                  ("gldv2", "train.csv", "id,landmark"),
                                                  ("csv", "train.csv", "file,label")])
def test_missing_csv_column_names_it(tmp_path, kind, csv_name, header):
    (tmp_path / "train").mkdir()
    (tmp_path / csv_name).write_text(header + "\n")
    with pytest.raises(SourceError, match="missing column"):
        prepare([{"kind": kind, "root": str(tmp_path)}], tmp_path / "out", processes=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_csv_and_bad_entries(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(SourceError, match="CSV file not found"):
        _read("products10k", tmp_path)
    with pytest.raises(SourceError, match="unknown source kind"):
        SourceSpec.from_dict({"kind": "coco", "root": "x"})
    with pytest.raises(SourceError, match="unknown key"):
        SourceSpec.from_dict({"kind": "gldv2", "root": "x", "image_per_class": 3})
    with pytest.raises(SourceError, match="unknown option"):
        SourceSpec.from_dict({"kind": "gldv2", "root": str(tmp_path), "options": {"csv": "a.csv"}}).read()


def test_recipe_defaults():
    assert SourceSpec.from_dict({"kind": "gldv2", "root": "x"}).max_classes == 7000
    assert SourceSpec.from_dict({"kind": "gldv2", "root": "x", "max_classes": None}).max_classes is None
    for kind in ("imagenet", "imagenet_tfrecord", "products10k", "gldv2"):
        assert SourceSpec.from_dict({"kind": kind, "root": "x"}).images_per_class == 50


def test_tfrecord_format_matches_tensorflow(tmp_path):
    import tensorflow as tf

    from guie_nb.data.shard_reader import read_all

    path = tmp_path / "x.tfrec"
    w = tfrecord_format.AtomicWriter(path)
    w.write(tfrecord_format.encode_example({"image": b"\x00\xffabc", "label": -1, "source": b"s", "image_id": b"i" * 16}))
    w.write(tfrecord_format.encode_example({"image": b"", "label": 17_690, "source": b"gldv2", "image_id": b"0" * 16}))
    assert not path.exists()
    w.commit()
    assert [r["label"] for r in read_all([path])] == [-1, 17_690]
    assert read_all([path])[0]["image"] == b"\x00\xffabc"
    # and TensorFlow's own Examples decode here
    ex = tf.train.Example(features=tf.train.Features(feature={
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, 2.0])),
        "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[-3, 2**40]))})).SerializeToString()
    assert tfrecord_format.decode_example(ex) == {"f": [0.5, 2.0], "i": [-3, 2**40]}
    assert [o for o, _ in tfrecord_format.iter_records(path)][0] == 0
