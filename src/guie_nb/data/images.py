"""Decode, normalise and re-encode one image file; any problem becomes a named reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold, made an error, not a warning


class BadImage(Exception):
    """The file cannot become a training image; `str(exc)` is the reason recorded in the manifest."""


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as the scorer sees it; transparency is composited onto white rather than black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing file")
    if path.stat().st_size == 0:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"decompression bomb ({img.width}x{img.height} pixels)")
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"not a decodable image ({type(e).__name__})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt image ({e})") from e


def encode_jpeg(img: Image.Image, max_side: int, quality: int = 90) -> bytes:
    """Downscale so the longer side is at most `max_side`, then JPEG-encode."""
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.BICUBIC, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def process_image(path: str | Path, max_side: int, quality: int = 90) -> bytes:
    return encode_jpeg(load_rgb(path), max_side, quality)
