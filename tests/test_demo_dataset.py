"""The embedded demo dataset: deterministic, in the real sources' layouts, readable by data-prep."""

from __future__ import annotations

import csv
import hashlib
import json

from guie_nb.data.demo import DemoSpec, write_demo_sources
from guie_nb.data.prepare import prepare
from guie_nb.data.shard_reader import read_all
from guie_nb.metrics import load_solution

SMALL = DemoSpec(products_classes=6, landmark_classes=5, views_per_class=4)


def tree_digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_sources_are_deterministic_and_in_real_layouts(tmp_path):
    a, b = write_demo_sources(tmp_path / "a", SMALL), write_demo_sources(tmp_path / "b", SMALL)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    with (a["products10k"] / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "class", "group"] and len(rows) == 24
    assert all((a["products10k"] / "train" / r["name"]).is_file() for r in rows)
    with (a["gldv2"] / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "landmark_id"] and len(rows) == 20
    for r in rows:
        i = r["id"]
        assert (a["gldv2"] / "train" / i[0] / i[1] / i[2] / f"{i}.jpg").is_file()
    # a different seed draws different objects
    write_demo_sources(tmp_path / "c", DemoSpec(products_classes=6, landmark_classes=5, views_per_class=4, seed=1))
    assert tree_digest(tmp_path / "c") != tree_digest(tmp_path / "a")


def test_data_prep_on_demo_sources(tmp_path):
    roots = write_demo_sources(tmp_path / "raw", SMALL)
    sources = [{"kind": "products10k", "root": str(roots["products10k"]), "val_classes": 2, "queries_per_class": 1},
               {"kind": "gldv2", "root": str(roots["gldv2"]), "val_classes": 2, "queries_per_class": 1}]
    manifest = prepare(sources, tmp_path / "data", max_side=64, images_per_shard=10, progress=False)
    assert manifest["num_classes"] == (6 - 2) + (5 - 2)
    assert manifest["train_images"] == 7 * 4 and len(manifest["train_files"]) == 3
    assert manifest["val"]["num_queries"] == 4 and manifest["val"]["num_index"] == 12
    assert manifest["skipped"] == []
    records = read_all([tmp_path / "data" / f for f in manifest["train_files"]])
    assert sorted({r["label"] for r in records}) == list(range(7))
    assert {r["source"] for r in records} == {"products10k", "gldv2"}
    public, private = load_solution(tmp_path / "data" / "solution.csv")
    solution = {**public, **private}
    assert len(solution) == 4 and all(len(v) == 3 for v in solution.values())
    train_ids = {r["image_id"] for r in records}
    assert not train_ids & {i for ids in solution.values() for i in ids}  # held-out classes stay out
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["images_written"] == 28 + 16
