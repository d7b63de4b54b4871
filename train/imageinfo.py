"""What an image file is, as Pillow reads it: for the dataset audit.

Decoding for training is :func:`edgeclass.device.pipeline.images.decode_image`'s job
(it applies EXIF rotation, expands grayscale, scales 16-bit and composites
alpha, exactly as on the Pi); this module only *describes* files, so the
audit can say how many needed that handling, and it finds truncated files,
which a decoder would otherwise fill with grey without complaint.

Pillow decodes every file completely (at 1/8 scale for JPEG, which still reads
all of the compressed data) and reports a file that ends early. A JPEG
without its final end-of-image marker is a special case: some cameras and
editors write them, and all their pixels are there. Such a file is decoded
again with the marker appended; it is truncated only if its last rows come
out as the flat grey libjpeg substitutes for missing data.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np

JPEG_EOI = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112
_MODES = {"L": "gray", "LA": "gray+alpha", "La": "gray+alpha", "RGB": "rgb", "RGBA": "rgba", "RGBa": "rgba",
          "CMYK": "cmyk", "P": "palette", "PA": "palette", "1": "gray", "I": "gray", "I;16": "gray",
          "I;16B": "gray", "I;16L": "gray", "YCbCr": "rgb", "LAB": "rgb"}


class ImageInfo(NamedTuple):
    """Facts about one encoded image (``None`` when unknown)."""

    format: str  # "jpeg", "png", ... as Pillow names it, or "other"
    mode: str | None  # "gray", "rgb", "rgba", "gray+alpha", "cmyk", "palette"
    bits: int | None  # bits per channel
    exif_orientation: int | None  # 1 = upright; 2..8 need a flip/rotation
    truncated: bool
    missing_eoi: bool = False  # a complete JPEG without its end-of-image marker


def inspect_image(data: bytes) -> ImageInfo:
    """Describe encoded image bytes with Pillow; never raises (an unknown format is ``"other"``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF and huge images; the audit only describes
            image = Image.open(io.BytesIO(data))
            fmt = (image.format or "other").lower()
            mode = _MODES.get(image.mode)
            bits = _bits(image)
            orientation = _orientation(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return ImageInfo("other", None, None, None, False)
    truncated = not _decodes(data)
    missing_eoi = False
    if truncated and fmt == "jpeg" and not data.endswith(JPEG_EOI):
        missing_eoi = _complete_without_eoi(data)
        truncated = not missing_eoi
    return ImageInfo(fmt, mode, bits, orientation, truncated, missing_eoi)


def _bits(image) -> int:
    if image.mode.startswith("I;16") or image.mode == "I":
        return 16
    # A 16-bit RGB(A) PNG opens as mode RGB; its decoder's raw mode says 16 bits ("RGB;16B").
    rawmode = image.tile[0].args if image.tile else None
    if isinstance(rawmode, tuple):
        rawmode = rawmode[0] if rawmode else None
    return 16 if isinstance(rawmode, str) and ";16" in rawmode else 8


def _orientation(image) -> int | None:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a damaged EXIF block: the orientation is unknown, the image may still be fine
        return None
    return int(value) if isinstance(value, int) else None


def _decodes(data: bytes) -> bool:
    """True when Pillow decodes every byte of the image without running out of data."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def _complete_without_eoi(data: bytes) -> bool:
    """A JPEG lacking only its end marker decodes with the marker added and no grey fill at the bottom."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data + JPEG_EOI))
        image.load()
        bottom = np.asarray(image.convert("RGB"))[-8:]
    except (OSError, ValueError, SyntaxError):
        return False
    # libjpeg decodes missing blocks as all-zero coefficients: exactly (128, 128, 128) everywhere.
    return not bool(np.all(bottom == 128))


def needs_handling(info: ImageInfo) -> list[str]:
    """The audit's tags for a file that is not a plain 8-bit upright RGB image."""
    tags = []
    if info.mode in ("gray", "gray+alpha"):
        tags.append("grayscale")
    if info.mode in ("rgba", "gray+alpha"):
        tags.append("alpha")
    if info.mode == "cmyk":
        tags.append("cmyk")
    if info.mode == "palette":
        tags.append("palette")
    if info.bits is not None and info.bits > 8:
        tags.append("16-bit")
    if info.exif_orientation not in (None, 1):
        tags.append("exif-rotated")
    if info.missing_eoi:
        tags.append("no end-of-image marker")
    return tags
