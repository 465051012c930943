"""Every bad-input kind real collections contain: fixed, or skipped with a counted reason."""

from __future__ import annotations

import csv
import io

import pytest
from PIL import Image

from _data_helpers import bad_files, jpeg, photo
from guie_nb.data.images import BadImage, load_rgb, process_bytes
from guie_nb.data.prepare import prepare

SKIP_REASONS = {
    "skip_truncated.jpg": "corrupt image",
    "skip_empty.jpg": "empty file",
    "skip_notimage.jpg": "not a decodable image",
    "skip_bomb.png": "decompression bomb",
}


@pytest.mark.parametrize("name", sorted(SKIP_REASONS))
def test_skipped_kinds_raise_named_reason(name):
    with pytest.raises(BadImage, match=SKIP_REASONS[name]):
        process_bytes(bad_files()[name], 64)


def _decoded(name: str, max_side: int = 64) -> Image.Image:
    return Image.open(io.BytesIO(process_bytes(bad_files()[name], max_side)))


def test_fixed_kinds_become_rgb_jpeg():
    for name in [n for n in bad_files() if n.startswith("fix_")]:
        img = _decoded(name)
        assert img.format == "JPEG" and img.mode == "RGB", name


def test_exif_rotation_is_applied():
    img = _decoded("fix_exif_rotated.jpg")  # stored 64x32 with orientation 6 (rotate 90)
    assert img.size == (32, 64)


def test_transparency_composited_on_white():
    img = load_rgb(bad_files()["fix_palette_transparent.png"])
    assert img.getpixel((5, 5)) == (255, 0, 0) and img.getpixel((35, 5)) == (255, 255, 255)


def test_16bit_scaled_not_clipped():
    img = load_rgb(bad_files()["fix_16bit.png"])
    lo, hi = img.convert("L").getextrema()
    assert lo == 0 and 200 < hi <= 255  # clipping would make almost everything 255


def test_cmyk_and_gray_keep_content():
    ref = photo(2).convert("CMYK").convert("RGB")
    got = load_rgb(bad_files()["fix_cmyk.jpg"])
    diff = sum(abs(a - b) for a, b in zip(ref.getpixel((10, 10)), got.getpixel((10, 10))))
    assert diff < 40


def test_small_rgb_jpeg_kept_byte_for_byte_and_big_one_resized():
    small = jpeg(5, (64, 48))
    assert process_bytes(small, 64) == small
    big = jpeg(6, (400, 100))
    out = Image.open(io.BytesIO(process_bytes(big, 64)))
    assert out.size == (64, 16)


def test_prepare_counts_every_reason(tmp_path):
    """A CSV source holding each bad kind, a row naming a missing file and a duplicate row."""
    root = tmp_path / "src"
    (root / "imgs").mkdir(parents=True)
    rows = []
    for name, data in bad_files().items():
        (root / "imgs" / name).write_bytes(data)
        rows.append((f"imgs/{name}", "bad"))
    for j in range(4):
        (root / "imgs" / f"ok{j}.jpg").write_bytes(jpeg(100 + j))
        rows.append((f"imgs/ok{j}.jpg", "good"))
    rows += [("imgs/missing.jpg", "good"), ("imgs/ok0.jpg", "good")]  # missing file, duplicate row
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    m = prepare([{"kind": "csv", "root": str(root), "images_per_class": 100}], tmp_path / "out", max_side=64,
                processes=1, progress=False)
    reasons = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in m["skipped"]}
    for name, why in SKIP_REASONS.items():
        assert reasons[name].startswith(why), (name, reasons.get(name))
    assert reasons["missing.jpg"] == "missing file"
    assert m["skipped_counts"]["duplicate row"] == 1
    assert m["skipped_counts"] == {"corrupt image": 1, "decompression bomb": 1, "duplicate row": 1,
                                   "empty file": 1, "missing file": 1, "not a decodable image": 1}
    fixed = len([n for n in bad_files() if n.startswith("fix_")])
    assert m["train_images"] == m["images_written"] == 4 + fixed
    assert m["sources"]["csv"]["class_counts"] == {"bad": fixed, "good": 4}
