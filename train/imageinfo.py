"""What an image file is, read from its header bytes: for the dataset audit.

Decoding is :func:`edgeclass.device.images.load_image`'s job (it already
applies EXIF rotation, expands grayscale, scales 16-bit and composites alpha);
this module only *describes* files so the audit can say how many needed that
handling, and catches truncated files that OpenCV would otherwise decode
silently with a grey bottom half (libjpeg only prints a warning).
"""

from __future__ import annotations

import struct
from typing import NamedTuple


class ImageInfo(NamedTuple):
    """Header facts about one encoded image (``None`` when unknown)."""

    format: str  # "jpeg", "png" or "other"
    mode: str | None  # "gray", "rgb", "rgba", "gray+alpha", "cmyk", "palette"
    bits: int | None  # bits per channel
    exif_orientation: int | None  # 1 = upright; 2..8 need a flip/rotation
    truncated: bool


def inspect_image(data: bytes) -> ImageInfo:
    """Describe encoded image bytes; never raises (unknown fields are ``None``)."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _inspect_jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _inspect_png(data)
    except (struct.error, IndexError, ValueError):
        return ImageInfo("other", None, None, None, False)
    return ImageInfo("other", None, None, None, False)


def _inspect_jpeg(data: bytes) -> ImageInfo:
    mode = bits = orientation = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00" and orientation is None:
            orientation = _exif_orientation(segment[6:])
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            bits = segment[0]
            components = segment[5]
            mode = {1: "gray", 3: "rgb", 4: "cmyk"}.get(components)
        elif marker == 0xDA:  # start of scan: the headers are over
            break
        pos += 2 + length
    # Entropy-coded data escapes 0xFF as 0xFF00, so the end-of-image marker only
    # appears as a real marker. The last one must come after the last start of
    # scan (an EXIF thumbnail carries its own SOS/EOI pair earlier in the file).
    truncated = data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    return ImageInfo("jpeg", mode, bits, orientation, truncated)


def _exif_orientation(tiff: bytes) -> int | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, _type, _n = struct.unpack(order + "HHI", entry[:8])
        if tag == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return None


_PNG_MODES = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgba"}


def _inspect_png(data: bytes) -> ImageInfo:
    # IHDR is always the first chunk: width, height, bit depth, colour type.
    bits, colour = data[24], data[25]
    truncated = b"IEND" not in data[-32:]
    return ImageInfo("png", _PNG_MODES.get(colour), bits, None, truncated)


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
    return tags
