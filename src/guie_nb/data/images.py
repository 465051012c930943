"""Decode, normalise and re-encode one image; any problem becomes a named reason.

Fixed on the way: EXIF rotation (applied), every Pillow mode to 8-bit RGB (`to_rgb`: CMYK, YCbCr,
LAB, HSV, grayscale, 1-bit, 16-bit in both byte orders, 32-bit integer and float scaled), palette or
alpha transparency (composited on white). Skipped with a reason: missing, empty, non-image,
truncated or corrupt files, decompression bombs. A JPEG that is already RGB, upright and within
`max_side` is kept byte for byte (no generation loss, and the fastest path).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold, made an error, not a warning
ORIENTATION = 0x0112


class BadImage(Exception):
    """The file cannot become a training image; `str(exc)` is the reason recorded in the manifest."""


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
# Pillow modes that `Image.convert("RGB")` maps correctly as they are (colour spaces, 1-bit, RGBX)
DIRECT = ("RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def _scale_to_l(arr: np.ndarray, lo: float, hi: float) -> Image.Image:
    """Values in [lo, hi] -> 8-bit grayscale, linearly; a constant image maps to mid-grey."""
    if not hi > lo:
        return Image.new("L", (arr.shape[1], arr.shape[0]), 128)
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _integer_to_l(img: Image.Image) -> Image.Image:
    """16-bit modes (either byte order): the top 8 bits. 32-bit "I": 8-bit values kept, 16-bit values
    (how most decoders hand over 16-bit PNG/PPM/TIFF) shifted by 8, anything wider scaled by its range."""
    arr = np.asarray(img)  # Pillow gives I;16B as big-endian uint16, so the byte order is handled here
    if img.mode in SIXTEEN_BIT:
        return Image.fromarray((arr.astype(np.uint16) >> 8).astype(np.uint8), "L")
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 255:
        return Image.fromarray(arr.astype(np.uint8), "L")
    if lo >= 0 and hi <= 65535:
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    return _scale_to_l(arr, lo, hi)


def _float_to_l(img: Image.Image) -> Image.Image:
    """32-bit float: scaled by its finite range (a float image has no fixed white point)."""
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        raise BadImage("float image without a finite pixel")
    arr = np.where(np.isfinite(arr), arr, finite.min())
    return _scale_to_l(arr, float(finite.min()), float(finite.max()))


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB as the scorer sees it, from every Pillow mode; raises BadImage (reason naming the
    mode) for a mode it does not know rather than guessing.

    Transparency (alpha or a palette/colour key) is composited onto white, not black; premultiplied
    alpha (RGBa, La) is un-multiplied first. 16-bit grayscale in either byte order keeps its top 8
    bits; 32-bit integer and float are scaled (see `_integer_to_l`, `_float_to_l`). CMYK, YCbCr,
    LAB, HSV, 1-bit and palette images go through Pillow's own conversions.
    """
    mode = img.mode
    if mode == "La":
        img, mode = img.convert("LA"), "LA"
    if mode in ALPHA or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if mode in SIXTEEN_BIT or mode == "I":
        return _integer_to_l(img).convert("RGB")
    if mode == "F":
        return _float_to_l(img).convert("RGB")
    if mode in DIRECT:
        return img if mode == "RGB" else img.convert("RGB")
    raise BadImage(f"unsupported image mode {mode!r}")


def read_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing file")
    data = path.read_bytes()
    if not data:
        raise BadImage("empty file")
    return data


# EXIF orientations 5-8 turn the stored image by 90 degrees: the upright image has its sides swapped
TRANSPOSED = (5, 6, 7, 8)


def _open(data: bytes, max_side: int | None) -> tuple[Image.Image, bool, bool, tuple[int, int]]:
    """The decoded image, whether `data` may be kept as it is, whether it is upright, and the
    upright image's full-resolution `(height, width)` (before any draft decoding or resize)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"decompression bomb ({w}x{h} pixels)")
            orientation = img.getexif().get(ORIENTATION, 1)
            upright = orientation == 1
            original = (w, h) if orientation in TRANSPOSED else (h, w)
            fmt = img.format
            if max_side and fmt == "JPEG" and max(w, h) >= 2 * max_side:
                # decode at 1/2, 1/4 or 1/8 scale in the DCT, still >= the target size
                scale = max_side / max(w, h)
                img.draft(img.mode, (max(1, round(w * scale)), max(1, round(h * scale))))
            img.load()
            keep = fmt == "JPEG" and img.mode == "RGB" and upright and max_side is not None and max(w, h) <= max_side
            return img, keep, upright, original
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise BadImage(f"decompression bomb ({e})") from e
        raise BadImage("not a decodable image") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"corrupt image ({e})") from e


def load_rgb(src: str | Path | bytes) -> Image.Image:
    """A file (path) or encoded bytes as an upright 8-bit RGB image."""
    data = src if isinstance(src, (bytes, bytearray)) else read_file(src)
    if not data:
        raise BadImage("empty file")
    img, _, upright, _ = _open(bytes(data), None)
    return to_rgb(img if upright else ImageOps.exif_transpose(img))


def encode_jpeg(img: Image.Image, max_side: int, quality: int = 90) -> bytes:
    """Downscale so the longer side is at most `max_side`, then JPEG-encode."""
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.BICUBIC, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def process_bytes(data: bytes, max_side: int, quality: int = 90) -> bytes:
    """Encoded image -> JPEG bytes of an upright RGB image with longer side <= `max_side`."""
    return process_bytes_sized(data, max_side, quality)[0]


def process_bytes_sized(data: bytes, max_side: int, quality: int = 90) -> tuple[bytes, tuple[int, int]]:
    """`process_bytes` and the upright source image's `(height, width)` in pixels before the
    `max_side` resize: the size the scorer would see (`ModelConfig.size_features`)."""
    if not data:
        raise BadImage("empty file")
    img, keep, upright, original = _open(data, max_side)
    if keep:
        return data, original
    try:
        return encode_jpeg(to_rgb(img if upright else ImageOps.exif_transpose(img)), max_side, quality), original
    except (OSError, ValueError) as e:
        raise BadImage(f"corrupt image ({e})") from e


def process_image(path: str | Path, max_side: int, quality: int = 90) -> bytes:
    return process_bytes(read_file(path), max_side, quality)
