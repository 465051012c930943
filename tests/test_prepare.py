"""Data-prep end to end: sampling, label space, validation split, size limit, reruns, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _data_helpers import jpeg, write_gldv2, write_imagenet_tfrecords, write_products10k
from guie_nb.data.images import BadImage
from guie_nb.data.prepare import OutputTooLarge, prepare, select
from guie_nb.data.source_images import SourceError, SourceImage
from guie_nb.data.sources import SourceSpec
from guie_nb.metrics import load_solution

REPO = Path(__file__).resolve().parents[1]


def _images(counts: dict[str, int], source="s") -> list[SourceImage]:
    return [SourceImage(Path(f"{c}/{j}.jpg"), c, f"{c}-{j}", source) for c, k in counts.items() for j in range(k)]


def _spec(**kw) -> SourceSpec:
    return SourceSpec.from_dict({"kind": "folder", "root": "x", **kw})


def test_sampling_rules():
    counts = {"a": 10, "b": 8, "c": 8, "d": 3, "e": 1}
    sel = select(_images(counts), _spec(images_per_class=5, max_classes=3, min_images_per_class=2), seed=0)
    assert sorted(sel.train) == ["a", "b", "c"]  # the biggest classes (a tie between b, c broken by seed)
    assert all(len(v) == 5 for v in sel.train.values())
    assert [e["path"] for e in sel.skipped] == ["e/0.jpg"]  # below min_images_per_class
    again = select(_images(counts), _spec(images_per_class=5, max_classes=3), seed=0)
    assert again.train == sel.train  # seeded: reproducible
    other = select(_images(counts), _spec(images_per_class=5, max_classes=3), seed=1)
    assert other.train != sel.train
    # ties at the max_classes cut are broken by the seed, not by name
    tie = {f"k{i}": 4 for i in range(12)}
    picks = {tuple(sorted(select(_images(tie), _spec(max_classes=3), seed=s).train)) for s in range(6)}
    assert len(picks) > 1


def test_duplicates_and_val_classes_are_whole():
    imgs = _images({"a": 6, "b": 6, "c": 6, "d": 6})
    sel = select(imgs + imgs[:2], _spec(images_per_class=4, val_classes=2, queries_per_class=1), seed=3)
    assert [e["reason"] for e in sel.skipped] == ["duplicate row", "duplicate row"]
    assert len(sel.val) == 2 and not set(sel.val) & set(sel.train)
    assert sum(len(v) for v in sel.val.values()) == 8
    with pytest.raises(SourceError, match="val_classes=4 is too many"):
        select(imgs, _spec(val_classes=4), seed=0)


def _two_sources(tmp_path) -> list[dict]:
    p = write_products10k(tmp_path / "p10k", {c: 4 + c % 3 for c in range(10)})
    g = write_gldv2(tmp_path / "gld", {1000 + 7 * c: 3 + c % 2 for c in range(8)})
    return [{"kind": "products10k", "root": str(p), "images_per_class": 4, "val_classes": 3, "queries_per_class": 2},
            {"kind": "gldv2", "root": str(g), "val_classes": 2, "max_classes": 6}]


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def test_label_space_validation_split_and_contract(tmp_path):
    from guie_nb.data.shard_reader import read_all

    out = tmp_path / "out"
    m = prepare(_two_sources(tmp_path), out, max_side=32, images_per_shard=9, processes=1, progress=False)
    p, g = m["sources"]["products10k"], m["sources"]["gldv2"]
    assert (p["train_classes"], g["train_classes"]) == (7, 4) and m["num_classes"] == 11
    assert (p["label_offset"], g["label_offset"]) == (0, 7)
    assert sorted(m["label_maps"]["gldv2"].values()) == list(range(7, 11))
    train = read_all([out / f for f in m["train_files"]])
    assert len(train) == m["train_images"] == p["train_images"] + g["train_images"] == 7 * 4 + 4 * 3 + 2
    assert m["train_files"][0] == f"train-00000-of-{len(m['train_files']):05d}.tfrec"
    assert {r["source"] for r in train} == {"products10k", "gldv2"}
    assert all(len(r["image_id"]) == 16 for r in train)
    for r in train:  # every label belongs to its own source's block
        assert r["label"] in m["label_maps"][r["source"]].values()
    # validation: whole held-out classes, queries_per_class queries each, the rest as index
    queries, index = read_all([out / "val-queries.tfrec"]), read_all([out / "val-index.tfrec"])
    public, private = load_solution(out / "solution.csv")
    solution = {**public, **private}
    assert len(queries) == m["val"]["num_queries"] == 3 * 2 + 2 * 1
    assert {q["image_id"] for q in queries} == set(solution)
    assert {i["image_id"] for i in index} == {i for ids in solution.values() for i in ids}
    assert not {r["image_id"] for r in train} & ({r["image_id"] for r in queries + index})
    assert all(r["label"] == -1 for r in queries + index)
    assert m["val"]["query_source"] == {q["image_id"]: q["source"] for q in queries}
    assert p["val_images"] + g["val_images"] == len(queries) + len(index)
    assert m["images_written"] == m["train_images"] + len(queries) + len(index)
    assert 0.5 < m["estimated_bytes"] / m["output_bytes"] < 2


def test_output_size_limit_is_checked_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputTooLarge, match=r"over the 1e-06 GB limit"):
        prepare(_two_sources(tmp_path), out, max_side=32, max_output_gb=1e-6, processes=1, progress=False)
    assert not out.exists()


def test_identical_reruns_and_core_counts(tmp_path):
    sources = _two_sources(tmp_path)
    a = prepare(sources, tmp_path / "a", max_side=32, images_per_shard=7, processes=1, progress=False)
    b = prepare(sources, tmp_path / "b", max_side=32, images_per_shard=7, processes=2, progress=False)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert len(a["train_files"]) >= 4
    for key in ("params_hash", "train_files", "label_maps", "val", "sources", "skipped"):
        assert a[key] == b[key], key
    # a changed parameter redoes the shards it touches; stale shards are removed
    c = prepare(sources, tmp_path / "a", max_side=24, images_per_shard=50, processes=1, progress=False)
    assert c["params_hash"] != a["params_hash"]
    assert sorted(p.name for p in (tmp_path / "a").glob("train-*")) == c["train_files"]


def test_resume_after_kill(tmp_path):
    sources = _two_sources(tmp_path)
    out = tmp_path / "out"
    args = dict(max_side=32, images_per_shard=4, processes=2, progress=False)
    code = ("import guie_nb, json, sys\nfrom guie_nb.data.prepare import prepare\n"
            f"prepare(json.loads(sys.argv[1]), sys.argv[2], **{args!r})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GUIE_DATA_PREP_KILL_AFTER_SHARDS": "3"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(sources), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILLed mid-run, workers too
    assert not (out / "manifest.json").exists()
    # finished = renamed to its final name and its marker written; a worker killed between the two
    # leaves a complete file without a marker, which the resume rightly redoes (not trusted)
    done = {p.name: p.stat() for p in out.glob("train-*.tfrec") if (out / ".shards" / f"{p.name}.json").is_file()}
    assert 3 <= len(done) < 12
    from guie_nb.data.shard_reader import read_all

    for path in out.glob("train-*.tfrec"):  # every file under a final name is complete
        assert len(read_all([path])) > 0
    m = prepare(sources, out, **args)
    after = {p.name: p.stat() for p in out.glob("train-*.tfrec")}
    for name, st in done.items():  # finished shards were not redone
        assert (after[name].st_ino, after[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    clean = prepare(sources, tmp_path / "clean", **{**args, "processes": 1})
    assert _files(out) == _files(tmp_path / "clean")
    assert m["params_hash"] == clean["params_hash"]


def test_changed_input_redoes_only_its_shard(tmp_path):
    root = tmp_path / "p"
    write_products10k(root, {c: 3 for c in range(6)})
    src = [{"kind": "products10k", "root": str(root)}]
    out = tmp_path / "out"
    prepare(src, out, max_side=32, images_per_shard=3, processes=1, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*")}
    # same file list, same hash: shards are trusted; a corrupted marker hash forces a redo
    marker = out / ".shards" / "train-00001-of-00006.tfrec.json"
    data = json.loads(marker.read_text())
    data["hash"] = "other parameters"
    marker.write_text(json.dumps(data))
    prepare(src, out, max_side=32, images_per_shard=3, processes=1, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*")}
    assert [n for n in before if before[n] != after[n]] == ["train-00001-of-00006.tfrec"]


def test_imagenet_tfrecord_records_reemitted_without_loss(tmp_path):
    from guie_nb.data.shard_reader import read_all

    root = write_imagenet_tfrecords(tmp_path / "inet", [3, 3, 2], files=2)
    m = prepare([{"kind": "imagenet_tfrecord", "root": str(root)}], tmp_path / "out", max_side=64,
                processes=2, progress=False)  # shards listed in parallel too
    assert m["train_images"] == 8 and m["skipped"] == []
    assert m["label_maps"]["imagenet_tfrecord"] == {"1": 0, "2": 1, "3": 2}
    stored = {jpeg(70_000 + c * 100 + j) for c, k in enumerate([3, 3, 2]) for j in range(k)}
    assert {r["image"] for r in read_all([tmp_path / "out" / f for f in m["train_files"]])} == stored


# --- files that exist, and validation-only sources ------------------------------------------------

PRESENT = [4, 4, 3, 2, 2, 2, 2, 2, 1, 1]  # files on disk per class of 12 rows: 23 in all


def _partly_downloaded_gldv2(root: Path) -> Path:
    """GLDv2 with 10 classes x 12 rows in train.csv, of which only PRESENT[c] files are on disk (as
    after extracting only some of the tar parts)."""
    import csv

    write_gldv2(root, {2000 + c: 12 for c in range(10)})
    with (root / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["landmark_id"], []).append(r["id"])
    for c, ids in enumerate(by_class.values()):
        for image_id in ids[PRESENT[c]:]:
            (root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg").unlink()
    return root


def test_partly_downloaded_gldv2_writes_every_present_file(tmp_path):
    """Regression: 8 of the 23 present files were written and 3 classes got a label with no image."""
    root = _partly_downloaded_gldv2(tmp_path / "gld")
    m = prepare([{"kind": "gldv2", "root": str(root), "images_per_class": 4, "min_images_per_class": 1}],
                tmp_path / "out", max_side=32, processes=1, progress=False)
    g = m["sources"]["gldv2"]
    assert m["train_images"] == 23 and g["train_classes"] == 10
    assert sorted(g["class_counts"].values(), reverse=True) == PRESENT  # no empty class
    assert (g["images_listed"], g["files_missing"], g["images_on_disk"]) == (120, 97, 23)
    assert m["existence_check"]["files_checked"] == 120 and m["existence_check"]["files_missing"] == 97
    assert m["skipped_counts"] == {"file not on disk": 97}
    assert 0 < len([e for e in m["skipped"] if e["reason"] == "file not on disk"]) <= 20  # examples only


def test_max_classes_ranks_by_files_that_exist(tmp_path):
    root = _partly_downloaded_gldv2(tmp_path / "gld")
    m = prepare([{"kind": "gldv2", "root": str(root), "images_per_class": 4, "max_classes": 3}],
                tmp_path / "out", max_side=32, processes=1, progress=False)
    # every class has 12 rows; the three with the most files on disk (4, 4, 3) are kept, whatever the seed
    assert sorted(m["sources"]["gldv2"]["class_counts"].values()) == [3, 4, 4]
    assert m["sources"]["gldv2"]["class_counts"].keys() == {"2000", "2001", "2002"}


def test_existence_pass_lists_each_folder_once(tmp_path, monkeypatch):
    import guie_nb.data.prepare as prep

    root = _partly_downloaded_gldv2(tmp_path / "gld")
    calls = []
    real = prep._list_folder
    monkeypatch.setattr(prep, "_list_folder", lambda folder: calls.append(folder) or real(folder))
    listing = SourceSpec.from_dict({"kind": "gldv2", "root": str(root)}).read()
    folders = {str(i.path.parent) for i in listing.images}
    counts = prep.keep_existing({"gldv2": listing})
    assert len(calls) == len(set(calls)) == counts["folders_listed"] == len(folders)
    assert counts["files_missing"] == 97 and len(listing.images) == 23 and listing.missing == 97


@pytest.mark.parametrize("num_shards, shard_index", [(1, 0), (2, 1)])
def test_dry_run_plans_what_prepare_writes(tmp_path, num_shards, shard_index):
    """The dry run (notebook 01's preflight) and prepare share one plan (`plan_data_prep`): on a
    partly downloaded GLDv2 its planned counts are what prepare then writes, also for a part."""
    from guie_nb.params import resolve_data_prep
    from guie_nb.preflight import preflight_data_prep

    root = _partly_downloaded_gldv2(tmp_path / "gld")
    sources = [{"kind": "gldv2", "root": str(root), "images_per_class": 4, "min_images_per_class": 1,
                "val_classes": 2, "queries_per_class": 1}]
    resolved = resolve_data_prep(sources=sources, out_dir=tmp_path / "out", max_side=32, images_per_shard=4,
                                 processes=1, num_shards=num_shards, shard_index=shard_index, dry_run=True)
    report = preflight_data_prep(resolved)
    assert report["ok"], report["problems"]
    data = resolved["data"]
    m = prepare(data["sources"], data["out_dir"], max_side=data["max_side"], images_per_shard=data["images_per_shard"],
                seed=data["seed"], processes=1, num_shards=num_shards, shard_index=shard_index,
                val_sources=data["val_sources"], progress=False)
    est = report["estimates"]
    assert est["files_missing"] == m["existence_check"]["files_missing"] == 97
    assert est["train_images_planned"] == m["train_images"] > 0
    assert est["images_planned"] == m["images_written"]
    if num_shards == 1:  # the plan's classes by size (the whole run's, in every part) are those written
        from guie_nb.data.resampling import size_histogram

        assert est["train_class_sizes"] == {n: size_histogram(s["class_counts"].values())
                                            for n, s in m["sources"].items()}
    val_images = m["val"].get("num_queries", 0) + m["val"].get("num_index", 0)
    assert (val_images > 0) == (shard_index == 0)  # the validation split is part 0's


@pytest.mark.parametrize("processes, parallel", [(None, 2), (4, 2), (1, 1)])
def test_dry_run_hours_count_a_kaggle_cpu_kernels_two_cores(tmp_path, processes, parallel):
    """A Kaggle CPU kernel starts a worker per vCPU (4) on 2 cores: the hours divide the plan's
    per-image seconds (one core) by the cores the workers share, not by the workers."""
    from guie_nb.params import resolve_data_prep
    from guie_nb.preflight import preflight_data_prep

    root = _partly_downloaded_gldv2(tmp_path / "gld")
    sources = [{"kind": "gldv2", "root": str(root), "images_per_class": 4, "min_images_per_class": 1}]
    resolved = resolve_data_prep(sources=sources, out_dir=tmp_path / "out", max_side=32, processes=processes,
                                 dry_run=True)
    est = preflight_data_prep(resolved)["estimates"]
    assert est["seconds_per_image"] > 0
    assert est["hours"] == pytest.approx(est["seconds_per_image"] * est["images_planned"] / parallel / 3600)


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


FAULTS_PER_IMAGE = """
import resource, sys
from pathlib import Path
from guie_nb.data.images import process_bytes
from guie_nb.data.shard_writer import raise_malloc_thresholds
data = [p.read_bytes() for p in sorted(Path(sys.argv[2]).glob("*.jpg"))]
if sys.argv[1] == "raised":
    assert raise_malloc_thresholds()
process_bytes(data[0], 512)  # imports and codec set-up out of the count
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    for d in data:
        process_bytes(d, 512)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (5 * len(data)))
"""


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_an_encoding_process_keeps_freed_memory_for_the_next_image(tmp_path):
    """Regression: a new worker process gave every image's buffers back to the kernel and faulted them
    in again for the next (~450 minor page faults per image, a fifth of its CPU time), so 2 processes
    scaled 1.49x; `raise_malloc_thresholds` (run by every worker and by a 1-process run) stops it."""
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(1024, 768), (800, 600)] * 2):
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([128 + 100 * np.sin(xx / (40 + 9 * i + c)) * np.cos(yy / 50) for c in range(3)], -1)
        arr += rng.normal(0, 6, arr.shape)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(tmp_path / f"{i}.jpg", quality=90)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    faults = {mode: float(subprocess.run([sys.executable, "-c", FAULTS_PER_IMAGE, mode, str(tmp_path)], env=env,
                                         check=True, capture_output=True, text=True).stdout)
              for mode in ("default", "raised")}
    assert faults["default"] > 200 and faults["raised"] < faults["default"] / 4, faults


def _winners_sources(tmp_path) -> tuple[list[dict], list[dict]]:
    from _data_helpers import (write_aliproducts, write_deepfashion_inshop, write_gldv2_full, write_gpr1200,
                               write_hm, write_met, write_shopee)

    train = [
        {"kind": "shopee", "root": str(write_shopee(tmp_path / "shopee", {11: 3, 12: 2}))},
        {"kind": "met", "root": str(write_met(tmp_path / "met", {5: 2, 6: 3}, kaggle=True))},
        {"kind": "aliproducts", "root": str(write_aliproducts(tmp_path / "ali", {"001": 2, "002": 2}))},
        {"kind": "hm", "root": str(write_hm(tmp_path / "hm", {108775: 3, 956217: 3}))},
        {"kind": "deepfashion_inshop", "root": str(write_deepfashion_inshop(
            tmp_path / "df", {"id_00000001": ["train"] * 2, "id_00000002": ["query", "gallery"]}))},
        {"kind": "gldv2_full", "root": str(write_gldv2_full(tmp_path / "gldf", {7: 2, 8: 3}))},
    ]
    val = [{"kind": "gpr1200", "root": str(write_gpr1200(tmp_path / "gpr", [0, 1, 200, 201, 1000], per_class=3))}]
    return train, val


def test_winners_datasets_and_validation_by_domain(tmp_path):
    from guie_nb.data.shard_reader import read_all
    from guie_nb.evaluation import ValidationSet, score

    train, val_sources = _winners_sources(tmp_path)
    out = tmp_path / "out"
    m = prepare(train, out, val_sources=val_sources, max_side=32, processes=1, progress=False)
    for s in train:  # every reader's images reach the shards, each source its own label block
        assert m["sources"][s["kind"]]["train_images"] >= 4, s["kind"]
    assert m["num_classes"] == 12
    gpr = m["sources"]["gpr1200"]
    assert gpr["val_only"] and gpr["train_classes"] == 0 and gpr["val_classes"] == 5 and m["label_maps"]["gpr1200"] == {}
    assert gpr["label_offset"] == 12  # no label block: it takes no labels
    records = read_all([out / f for f in m["train_files"]])
    assert "gpr1200" not in {r["source"] for r in records}
    val = ValidationSet.from_manifest(out, m)
    assert set(val.query_source.values()) == {"gpr1200"}
    assert sorted(set(val.query_domain.values())) == ["gpr1200_faces", "gpr1200_inat", "gpr1200_landmarks"]
    # an embedding that finds each query's own class: 1.0 everywhere; one that does not: lower there
    group = {q: k for k, q in enumerate(sorted(val.solution))}
    for q, ids in val.solution.items():
        group.update({i: group[q] for i in ids})
    ids = sorted(group)
    emb = np.eye(len(val.solution))[[group[i] for i in ids]]
    queries = [i for i in ids if i in val.solution]
    index = [i for i in ids if i not in val.solution]
    perfect = score(val, queries, emb[[ids.index(q) for q in queries]], index, emb[[ids.index(i) for i in index]])
    assert perfect == {"map5": 1.0, "map5_gpr1200": 1.0, "map5_gpr1200_faces": 1.0, "map5_gpr1200_inat": 1.0,
                       "map5_gpr1200_landmarks": 1.0}
    swapped = emb.copy()
    faces = [i for i in queries if val.query_domain[i] == "gpr1200_faces"]
    for q in faces:  # the faces queries look like nothing in the index
        swapped[ids.index(q)] = -1
    s = score(val, queries, swapped[[ids.index(q) for q in queries]], index, emb[[ids.index(i) for i in index]])
    assert s["map5_gpr1200_faces"] < 1.0 and s["map5_gpr1200_landmarks"] == 1.0


def test_val_only_rules():
    with pytest.raises(SourceError, match="val_classes has no meaning"):
        SourceSpec.from_dict({"kind": "gpr1200", "root": "x", "val_only": True, "val_classes": 3})
    sel = select(_images({"a": 3, "b": 1, "c": 2}), _spec(val_only=True, min_images_per_class=1), seed=0)
    assert sel.train == {} and sorted(sel.val) == ["a", "c"]
    assert [e["reason"] for e in sel.skipped] == ["validation class with no index image after its queries"]
    with pytest.raises(SourceError, match="at least one training source"):
        prepare([{"kind": "folder", "root": "x", "val_only": True}], "unused", processes=1, progress=False)


def test_notebook_parameter_val_sources_resolves_to_val_only(tmp_path):
    from guie_nb.params import resolve_data_prep

    r = resolve_data_prep(sources=[{"kind": "folder", "root": "a"}], val_sources=[{"kind": "gpr1200", "root": "g"}],
                          out_dir=tmp_path)
    assert [s["val_only"] for s in r["data"]["sources"]] == [False]
    (gpr,) = r["data"]["val_sources"]
    assert gpr["val_only"] and gpr["kind"] == "gpr1200" and gpr["images_per_class"] == 10
    assert resolve_data_prep(sources=[{"kind": "folder", "root": "a"}], out_dir=tmp_path)["data"]["val_sources"] == []


def test_progress_in_a_notebook_or_log_is_whole_lines(tmp_path, capsys):
    """stdout not a terminal (papermill, nbmake, Kaggle's log): no carriage-return redraws."""
    prepare(_two_sources(tmp_path), tmp_path / "out", max_side=32, images_per_shard=9, processes=1)
    text = capsys.readouterr().out
    assert "\r" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("images: ") and "%|" in ln]
    assert lines and lines[-1].startswith("images: 100%|"), text
