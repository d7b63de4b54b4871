"""Reading image files into RGB uint8 arrays, the one way every stage does it.

The device (``predict``, image-folder sources) and the trainer both decode
through :func:`load_image`, so a photo looks the same to training and to the
Pi: EXIF orientation applied, grayscale expanded, 16-bit scaled to 8-bit,
transparency composited onto white, CMYK converted by the JPEG decoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from ..errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)
# Formats that can carry an alpha channel; only these pay for a second decode.
_ALPHA_SUFFIXES = frozenset({".png", ".webp", ".tif", ".tiff"})


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImageError(
            "OpenCV is not installed: pip install 'edgeclass[device]' (opencv-python-headless)"
        ) from exc
    return cv2


def is_image_path(path: Path) -> bool:
    """True when ``path`` has a suffix of an image format we decode."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an HxWx3 uint8 RGB array.

    Raises :class:`ImageError` naming ``name`` when the bytes are not an image.
    """
    cv2 = _cv2()
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageError(f"{name}: file is empty, expected an image")
    suffix = Path(name).suffix.lower()
    if suffix in _ALPHA_SUFFIXES:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
            return _composite_on_white(raw)
    # IMREAD_COLOR applies EXIF orientation, expands gray and scales 16-bit to 8-bit.
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None and data[:2] == b"\xff\xd8" and not data.endswith(b"\xff\xd9"):
        # Some cameras and editors omit a JPEG's final end-of-image marker;
        # OpenCV 5 then refuses the whole image, although every pixel is there.
        bgr = cv2.imdecode(np.frombuffer(data + b"\xff\xd9", np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _composite_on_white(bgra: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if bgra.dtype == np.uint16:
        bgra = (bgra >> 8).astype(np.uint8)
    alpha = bgra[:, :, 3:4].astype(np.float32) / 255.0
    bgr = bgra[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return cv2.cvtColor(np.clip(bgr + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array, or raise :class:`ImageError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, expected an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path))


class ImageListing(NamedTuple):
    """Image files found under some paths, and the files that were passed over."""

    images: list[Path]
    skipped: list[Path]


def list_images(paths: Iterable[str | Path]) -> ImageListing:
    """Expand files and folders (recursively, sorted) into image files.

    Files whose suffix is not an image format are returned in ``skipped`` so the
    caller can list them; a path that does not exist raises :class:`ImageError`.
    """
    images: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.startswith("."):
                    continue
                (images if is_image_path(child) else skipped).append(child)
        elif path.is_file():
            (images if is_image_path(path) else skipped).append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return ImageListing(images, skipped)


def iter_loaded(paths: Iterable[Path]) -> Iterator[tuple[Path, np.ndarray | ImageError]]:
    """Yield ``(path, rgb)`` per file, or ``(path, error)`` for a file that does not decode."""
    for path in paths:
        try:
            yield path, load_image(path)
        except ImageError as exc:
            yield path, exc
