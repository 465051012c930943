"""Small datasets in the real on-disk layouts, and the bad files real collections contain."""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, size=(64, 48)) -> Image.Image:
    """A small RGB image whose pixels depend on `seed` (distinct, compressible like a photo)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = (base + 60 * np.sin(xx / (3 + seed % 7)) [..., None] + 40 * np.cos(yy / 5)[..., None]) % 256
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def jpeg(seed: int, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    photo(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_products10k(root: Path, counts: dict[int, int], seed: int = 0) -> Path:
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows, n = [], 0
    for cls, k in counts.items():
        for _ in range(k):
            (root / "train" / f"{n}.jpg").write_bytes(jpeg(seed * 10_000 + n))
            rows.append((f"{n}.jpg", cls, cls % 3))
            n += 1
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("name", "class", "group"), *rows])
    return root


def gldv2_id(n: int) -> str:
    return f"{(n * 2654435761) % 16**16:016x}"


def write_gldv2(root: Path, counts: dict[int, int]) -> Path:
    rows, n = [], 0
    for landmark, k in counts.items():
        for _ in range(k):
            image_id = gldv2_id(n)
            folder = root / "train" / image_id[0] / image_id[1] / image_id[2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{image_id}.jpg").write_bytes(jpeg(50_000 + n))
            rows.append((image_id, landmark))
            n += 1
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "landmark_id"), *rows])
    return root


def synset(i: int) -> str:
    return f"n{1440764 + i * 17:08d}"


def write_imagenet(root: Path, counts: list[int]) -> Path:
    """Kaggle's ILSVRC layout with LOC_synset_mapping.txt."""
    lines = []
    for i, k in enumerate(counts):
        s = synset(i)
        lines.append(f"{s} class number {i}, thing")
        folder = root / "ILSVRC" / "Data" / "CLS-LOC" / "train" / s
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(k):
            (folder / f"{s}_{j}.JPEG").write_bytes(jpeg(90_000 + i * 100 + j))
    (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return root


def model_garden_example(image: bytes, label: int, filename: str) -> bytes:
    """An Example as TF Model Garden's ImageNet converter writes it (built with TensorFlow itself)."""
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    feature = {"image/encoded": b(image), "image/format": b(b"JPEG"), "image/class/label": i(label),
               "image/class/synset": b(synset(label - 1).encode()), "image/filename": b(filename.encode()),
               "image/height": i(48), "image/width": i(64), "image/colorspace": b(b"RGB")}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_imagenet_tfrecords(root: Path, counts: list[int], files: int = 2) -> Path:
    """`train-XXXXX-of-XXXXX` shards (labels 1..N, as the 1001-class format), plus a validation shard."""
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    examples = [model_garden_example(jpeg(70_000 + c * 100 + j), c + 1, f"{synset(c)}_{j}.JPEG")
                for c, k in enumerate(counts) for j in range(k)]
    for f in range(files):
        with tf.io.TFRecordWriter(str(root / f"train-{f:05d}-of-{files:05d}")) as w:
            for ex in examples[f::files]:
                w.write(ex)
    with tf.io.TFRecordWriter(str(root / "validation-00000-of-00001")) as w:
        w.write(examples[0])
    return root


def write_folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, k in counts.items():
        for j in range(k):
            sub = root / cls / ("nested" if j % 2 else "")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{j}.jpg").write_bytes(jpeg(30_000 + sum(map(ord, cls)) * 10 + j))
    return root


def write_csv_source(root: Path, counts: dict[str, int]) -> Path:
    rows = []
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for cls, k in counts.items():
        for j in range(k):
            name = f"imgs/{cls}_{j}.png"
            photo(20_000 + len(rows)).save(root / name)
            rows.append((name, cls))
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return root


# --- bad inputs ---------------------------------------------------------------------------------

def exif_rotated_jpeg(size=(64, 32), orientation: int = 6) -> bytes:
    img = photo(7, size)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def bad_files() -> dict[str, bytes]:
    """name -> bytes of every awkward file kind (name prefix: what the pipeline should do)."""
    out: dict[str, bytes] = {}
    good = jpeg(1, (64, 48))
    out["skip_truncated.jpg"] = good[: len(good) // 2]
    out["skip_empty.jpg"] = b""
    out["skip_notimage.jpg"] = b"this is a text file, not an image\n" * 10
    buf = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buf, "PNG")  # 90 M pixels in a few kB
    out["skip_bomb.png"] = buf.getvalue()
    buf = io.BytesIO()
    photo(2).convert("CMYK").save(buf, "JPEG")
    out["fix_cmyk.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    photo(3).convert("L").save(buf, "JPEG")
    out["fix_gray.jpg"] = buf.getvalue()
    pal = Image.new("P", (40, 30), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 20, 30))  # left half red, right half transparent (index 0)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    out["fix_palette_transparent.png"] = buf.getvalue()
    arr = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out["fix_16bit.png"] = buf.getvalue()
    out["fix_exif_rotated.jpg"] = exif_rotated_jpeg()
    return out


# --- the winners' extra datasets, each in its published layout ----------------------------------

def _csv(path: Path, header: tuple, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def write_shopee(root: Path, counts: dict[int, int], reposted: int = 1) -> Path:
    """train.csv (posting_id,image,image_phash,title,label_group) + train_images/; the last
    `reposted` postings reuse the first posting's image file, as the real data does."""
    rows, n = [], 0
    for group, k in counts.items():
        for _ in range(k):
            name = f"{n:032x}.jpg"
            (root / "train_images").mkdir(parents=True, exist_ok=True)
            (root / "train_images" / name).write_bytes(jpeg(110_000 + n))
            rows.append((f"train_{n}", name, f"{n:016x}", f"title {n}", group))
            n += 1
    for j in range(reposted):
        rows.append((f"train_re{j}", rows[0][1], rows[0][2], "same photo again", rows[0][4]))
    _csv(root / "train.csv", ("posting_id", "image", "image_phash", "title", "label_group"), rows)
    return root


def write_met(root: Path, counts: dict[int, int], kaggle: bool = False) -> Path:
    """ground_truth/MET_database.json + MET/<id>/<n>.jpg (Kaggle's copy: MET/MET/<id>/<n>.jpg)."""
    import json

    base = root / "MET" if kaggle else root
    entries = []
    for exhibit, k in counts.items():
        for n in range(k):
            path = f"MET/{exhibit}/{n}.jpg"
            (base / path).parent.mkdir(parents=True, exist_ok=True)
            (base / path).write_bytes(jpeg(120_000 + exhibit * 10 + n))
            entries.append({"id": exhibit, "path": path})
    (root / "ground_truth").mkdir(parents=True, exist_ok=True)
    (root / "ground_truth" / "MET_database.json").write_text(json.dumps(entries))
    return root


def write_aliproducts(root: Path, counts: dict[str, int]) -> Path:
    """train.json {"images": [{"image_id", "class_id"}]} + train/<class_id>/<image_id>."""
    import json

    images = []
    for cls, k in counts.items():
        for n in range(k):
            name = f"{cls}_{n}.jpg"
            (root / "train" / cls).mkdir(parents=True, exist_ok=True)
            (root / "train" / cls / name).write_bytes(jpeg(130_000 + len(images)))
            images.append({"image_id": name, "class_id": cls})
    (root / "train.json").write_text(json.dumps({"images": images}))
    return root


def write_hm(root: Path, counts: dict[int, int], without_image: int = 1) -> Path:
    """articles.csv (article_id without its leading zero, product_code, ...) + images/0xx/0<id>.jpg;
    the last `without_image` articles have no image, as many real ones do not."""
    rows = []
    for product, k in counts.items():
        for colour in range(k):
            article = product * 1000 + 15 + colour  # e.g. 108775015
            padded = f"{article:010d}"
            if len(rows) < sum(counts.values()) - without_image:
                (root / "images" / padded[:3]).mkdir(parents=True, exist_ok=True)
                (root / "images" / padded[:3] / f"{padded}.jpg").write_bytes(jpeg(140_000 + len(rows)))
            rows.append((article, product, f"product {product}", 253, "Vest top"))
    _csv(root / "articles.csv", ("article_id", "product_code", "prod_name", "product_type_no",
                                 "product_type_name"), rows)
    return root


def write_deepfashion_inshop(root: Path, items: dict[str, list[str]]) -> Path:
    """list_eval_partition.txt (count, header, `image_name item_id evaluation_status` rows) + img/..."""
    lines = []
    for item, statuses in items.items():
        for n, status in enumerate(statuses):
            name = f"img/WOMEN/Dresses/{item}/{n:02d}_{n + 1}_front.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(jpeg(150_000 + len(lines)))
            lines.append(f"{name}    {item}    {status}")
    (root / "list_eval_partition.txt").write_text(
        "\n".join([str(len(lines)), "image_name item_id evaluation_status", *lines]) + "\n")
    return root


def write_gpr1200(root: Path, classes: list[int], per_class: int = 10) -> Path:
    """images/<class>_<name>.jpg, as GPR1200.zip extracts."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for c in classes:
        for n in range(per_class):
            (root / "images" / f"{c}_{n:04d}abc.jpg").write_bytes(jpeg(160_000 + c * 20 + n))
    return root


def write_gldv2_full(root: Path, counts: dict[int, int], clean: bool = True) -> Path:
    """train_clean.csv (landmark_id, space-separated ids) or train.csv (id,url,landmark_id) + train/a/b/c/."""
    per_landmark, n = {}, 0
    for landmark, k in counts.items():
        for _ in range(k):
            image_id = gldv2_id(10_000 + n)
            folder = root / "train" / image_id[0] / image_id[1] / image_id[2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{image_id}.jpg").write_bytes(jpeg(170_000 + n))
            per_landmark.setdefault(landmark, []).append(image_id)
            n += 1
    if clean:
        _csv(root / "train_clean.csv", ("landmark_id", "images"), [(lm, " ".join(ids)) for lm, ids in per_landmark.items()])
    else:
        _csv(root / "train.csv", ("id", "url", "landmark_id"),
             [(i, f"https://upload.wikimedia.org/x/{i}.jpg", lm) for lm, ids in per_landmark.items() for i in ids])
    return root
