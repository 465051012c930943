"""Decode, normalise and re-encode one image; any problem becomes a named reason.

Fixed on the way: EXIF rotation (applied), CMYK / grayscale / 16-bit (to 8-bit RGB), palette or
alpha transparency (composited on white). Skipped with a reason: missing, empty, non-image,
truncated or corrupt files, decompression bombs. A JPEG that is already RGB, upright and within
`max_side` is kept byte for byte (no generation loss, and the fastest path).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold, made an error, not a warning
ORIENTATION = 0x0112


class BadImage(Exception):
    """The file cannot become a training image; `str(exc)` is the reason recorded in the manifest."""


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as the scorer sees it; transparency is composited onto white rather than black."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping
        img = img.point(lambda v: v / 256).convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing file")
    data = path.read_bytes()
    if not data:
        raise BadImage("empty file")
    return data


def _open(data: bytes, max_side: int | None) -> tuple[Image.Image, bool, bool]:
    """The decoded image, whether `data` may be kept as it is, and whether it is upright."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"decompression bomb ({w}x{h} pixels)")
            upright = img.getexif().get(ORIENTATION, 1) == 1
            fmt = img.format
            if max_side and fmt == "JPEG" and max(w, h) >= 2 * max_side:
                # decode at 1/2, 1/4 or 1/8 scale in the DCT, still >= the target size
                scale = max_side / max(w, h)
                img.draft(img.mode, (max(1, round(w * scale)), max(1, round(h * scale))))
            img.load()
            keep = fmt == "JPEG" and img.mode == "RGB" and upright and max_side is not None and max(w, h) <= max_side
            return img, keep, upright
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
    img, _, upright = _open(bytes(data), None)
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
    if not data:
        raise BadImage("empty file")
    img, keep, upright = _open(data, max_side)
    if keep:
        return data
    try:
        return encode_jpeg(to_rgb(img if upright else ImageOps.exif_transpose(img)), max_side, quality)
    except (OSError, ValueError) as e:
        raise BadImage(f"corrupt image ({e})") from e


def process_image(path: str | Path, max_side: int, quality: int = 90) -> bytes:
    return process_bytes(read_file(path), max_side, quality)
