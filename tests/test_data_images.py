"""Every bad-input kind real collections contain: fixed, or skipped with a counted reason."""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from _data_helpers import bad_files, jpeg, photo
from guie_nb.data.images import BadImage, load_rgb, process_bytes, to_rgb
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
    assert reasons["missing.jpg"] == "file not on disk"  # found by the existence pass, before sampling
    assert m["skipped_counts"]["duplicate row"] == 1
    assert m["skipped_counts"] == {"corrupt image": 1, "decompression bomb": 1, "duplicate row": 1,
                                   "empty file": 1, "file not on disk": 1, "not a decodable image": 1}
    fixed = len([n for n in bad_files() if n.startswith("fix_")])
    assert m["train_images"] == m["images_written"] == 4 + fixed
    assert m["sources"]["csv"]["class_counts"] == {"bad": fixed, "good": 4}


# --- every Pillow mode ---------------------------------------------------------------------------

W, H = 32, 24
GRAD = np.tile(np.linspace(0, 255, W), (H, 1)).round().astype(np.uint8)  # left black .. right white
RGB_REF = np.stack([GRAD, GRAD[::-1, ::-1], np.full((H, W), 90, np.uint8)], -1)  # colour, no flat channel


def _alpha(left_opaque: bool = True) -> Image.Image:
    a = np.full((H, W), 255, np.uint8)
    a[:, W // 2:] = 0  # right half fully transparent
    return Image.fromarray(a, "L")


def _white_right(ref: np.ndarray) -> np.ndarray:
    out = ref.copy()
    out[:, W // 2:] = 255
    return out


def _mode_case(mode: str) -> tuple[Image.Image, np.ndarray]:
    """An image in `mode` and the 8-bit RGB the scorer should see, built independently of `to_rgb`."""
    gray3 = np.repeat(GRAD[..., None], 3, -1)
    rgb = Image.fromarray(RGB_REF, "RGB")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        order = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
        return Image.frombytes(mode, (W, H), (GRAD.astype(np.uint16) * 257).astype(order).tobytes()), gray3
    if mode == "I":  # 32-bit values beyond 16 bits: scaled by their range
        return Image.fromarray(GRAD.astype(np.int32) * 1_000_000 - 70_000_000, "I"), gray3
    if mode == "F":  # any float range: scaled by it
        return Image.fromarray((GRAD.astype(np.float32) / 255) * 3.5 - 1.25, "F"), gray3
    if mode == "1":
        return Image.fromarray(GRAD).convert("1", dither=Image.Dither.NONE), np.repeat(
            np.where(GRAD >= 128, 255, 0).astype(np.uint8)[..., None], 3, -1)
    if mode == "L":
        return Image.fromarray(GRAD, "L"), gray3
    if mode in ("LA", "La"):
        img = Image.merge("LA", (Image.fromarray(GRAD, "L"), _alpha()))
        return (img if mode == "LA" else img.convert("La")), _white_right(gray3)
    if mode in ("RGBA", "RGBa"):
        img = Image.merge("RGBA", (*rgb.split(), _alpha()))
        return (img if mode == "RGBA" else img.convert("RGBa")), _white_right(RGB_REF)
    if mode == "P":
        img = rgb.quantize(256)
        return img, np.asarray(img.convert("RGB"))
    if mode == "PA":
        p = rgb.quantize(256)
        img = Image.merge("PA", (p, _alpha()))
        img.putpalette(p.getpalette())
        return img, _white_right(np.asarray(p.convert("RGB")))
    return rgb.convert(mode), RGB_REF  # RGB, RGBX, CMYK, YCbCr, LAB, HSV: colour spaces of the same pixels


def _mean_diff(img: Image.Image, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(img.convert("RGB"), np.int16) - ref.astype(np.int16)).mean())


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_every_pillow_mode_converts_to_the_right_pixels(mode):
    img, ref = _mode_case(mode)
    assert img.mode == mode
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (W, H)
    assert _mean_diff(out, ref) < 3, f"{mode}: mean |diff| {_mean_diff(out, ref):.1f} from the expected pixels"


def test_16bit_big_endian_tiff_is_kept_and_scaled():
    """Regression: mode I;16B was skipped as 'corrupt image (point operation not supported...)'."""
    arr = (GRAD.astype(np.uint16) * 257)
    for mode, order in (("I;16B", ">u2"), ("I;16", "<u2")):
        buf = io.BytesIO()
        Image.frombytes(mode, (W, H), arr.astype(order).tobytes()).save(buf, "TIFF")
        assert Image.open(io.BytesIO(buf.getvalue())).mode == mode  # the file really is that byte order
        out = Image.open(io.BytesIO(process_bytes(buf.getvalue(), 64)))
        assert _mean_diff(out, np.repeat(GRAD[..., None], 3, -1)) < 3, mode


def _saved(img: Image.Image, fmt: str) -> bytes | None:
    """`img` written as `fmt` when Pillow can write it and read it back, else None."""
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.save(buf, fmt)
            Image.open(io.BytesIO(buf.getvalue())).load()
    except Exception:  # noqa: BLE001  (Pillow raises many kinds for "cannot write/read this mode")
        return None
    return buf.getvalue()


Image.init()
FORMATS = sorted(Image.SAVE)


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_every_mode_in_every_format_pillow_writes_is_kept_or_named(mode):
    """Each (mode, format) Pillow can write and read back: processed to a JPEG that is not blank
    (never silently black or white), or skipped with a named reason that is not 'corrupt image'."""
    img, ref = _mode_case(mode)
    written = 0
    for fmt in FORMATS:
        data = _saved(img, fmt)
        if data is None:
            continue
        written += 1
        opened = Image.open(io.BytesIO(data))
        opened.load()  # some formats (ICO) settle their mode only when loaded
        try:
            out = Image.open(io.BytesIO(process_bytes(data, 64)))
        except BadImage as e:
            assert not str(e).startswith("corrupt image"), f"{mode} as {fmt} ({opened.mode}): {e}"
            continue
        arr = np.asarray(out.convert("L"), np.float64)
        # a file whose writer already flattened the pixels (F as AVIF clips to 0..2) may stay flat
        stored = np.asarray(opened)
        stored_levels = len(np.unique(stored))
        if stored_levels > 16:
            assert arr.std() > 20, f"{mode} as {fmt} ({opened.mode}): flat output, mean {arr.mean():.0f}"
        same = opened.mode == mode and stored.shape == np.asarray(img).shape and np.array_equal(stored, np.asarray(img))
        if same and not (mode == "P" and opened.getpalette() != img.getpalette()):  # stored losslessly
            assert _mean_diff(out, ref) < 8, f"{mode} as {fmt}: mean |diff| {_mean_diff(out, ref):.1f}"
    assert written or mode in ("La", "I;16N"), f"no format wrote mode {mode}"
