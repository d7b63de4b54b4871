"""Training on random crops of the whole photo.

Validation, test and the head phase's features see the device's centre crop
(``images-N.npy``, bit for bit what the Pi feeds the model). Fine-tuning
instead sees a new random region of the *whole* photo every epoch, the
augmentation that matters most on small datasets:

- each photo is cached once, uncropped, with its short side at
  :data:`CACHE_SCALE` x the input size (a long side beyond :data:`MAX_ASPECT`
  x the short one is centre-cropped to it, which bounds the cache);
- every epoch, each photo gets a crop covering a random fraction of its area
  (``[Augment.crop, 1]``) at a random aspect ratio (``[3/4, 4/3]``, log-uniform,
  as in ImageNet training), resized to the input size with the device's
  interpolation rule, mirrored half of the time, then brightness and contrast
  jittered.

Every random number comes from a generator seeded by (seed, epoch, photo), so
a seeded run draws the same crops whatever the thread timing, and ``--resume``
continues with the crops an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from edgeclass.device.bundle import ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image

CACHE_SCALE = 1.15  # short side of the cached photo, as a multiple of the input size
MAX_ASPECT = 2.0  # longest kept long side, as a multiple of the short side
RATIO = (3 / 4, 4 / 3)  # crop aspect ratios (width / height), as in ImageNet training


def cache_short_side(input_size: int) -> int:
    """The short side, in pixels, at which whole photos are cached for ``input_size`` inputs."""
    return int(round(input_size * CACHE_SCALE))


def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The device's own resize, without its crop (the crop is already cut): same interpolation rule."""
    return resize_image(rgb, height, width, ResizePolicy.STRETCH)


def whole_photo(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """``rgb`` scaled so its short side is ``short_side``, uncropped up to :data:`MAX_ASPECT`."""
    h, w = rgb.shape[:2]
    longest = int(round(min(h, w) * MAX_ASPECT))
    if h > longest:  # a panorama: keep its middle, as the centre crop would
        top = (h - longest) // 2
        rgb, h = rgb[top : top + longest], longest
    if w > longest:
        left = (w - longest) // 2
        rgb, w = rgb[:, left : left + longest], longest
    scale = short_side / min(h, w)
    return _resize(rgb, max(short_side, int(round(h * scale))), max(short_side, int(round(w * scale))))


class WholePhotoWriter:
    """Appends whole photos to one flat file from many threads; :meth:`finish` writes the index."""

    def __init__(self, path: Path, count: int, short_side: int):
        self.path = Path(path)
        self.short_side = short_side
        self.index = np.full((count, 3), -1, dtype=np.int64)  # offset, height, width per photo
        self._lock = threading.Lock()
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed in finish)

    def put(self, row: int, rgb: np.ndarray) -> None:
        """Store photo ``row`` (resized here, outside the lock: OpenCV releases the GIL)."""
        photo = whole_photo(rgb, self.short_side)
        data = photo.tobytes()
        with self._lock:
            offset = self._file.tell()
            self._file.write(data)
        self.index[row] = (offset, photo.shape[0], photo.shape[1])

    def finish(self) -> Path:
        """Close the pixel file and save the index beside it (``PATH.index.npy``); returns the index path."""
        self._file.close()
        index_path = index_file(self.path)
        np.save(index_path, self.index)
        return index_path


def index_file(path: Path) -> Path:
    return Path(str(path) + ".index.npy")


class WholePhotos:
    """The cached whole photos: ``photos[row]`` is an (h, w, 3) uint8 view."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.index = np.load(index_file(self.path))
        size = self.path.stat().st_size
        self.pixels = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> np.ndarray:
        offset, h, w = (int(v) for v in self.index[row])
        if offset < 0:
            raise KeyError(f"photo {row} is not in the whole-photo cache {self.path} (it did not decode)")
        return self.pixels[offset : offset + h * w * 3].reshape(h, w, 3)


def random_crop_box(height: int, width: int, rng: np.random.Generator, min_scale: float,
                    ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random ``[min_scale, 1]`` of the area at a random aspect.

    Ten tries, as torchvision's RandomResizedCrop; then the largest centred
    crop within the ratio range.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def augment_photo(photo: np.ndarray, size: int, rng: np.random.Generator, *, min_scale: float, flip: bool,
                  brightness: float, contrast: float) -> np.ndarray:
    """One training image: a random-resized crop of ``photo``, mirrored, colour-jittered; float32 0..255."""
    top, left, h, w = random_crop_box(photo.shape[0], photo.shape[1], rng, min_scale)
    image = _resize(photo[top : top + h, left : left + w], size, size).astype(np.float32)
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    if contrast:
        # As Keras' RandomContrast: scale each channel's deviation from its mean.
        factor = rng.uniform(1 - contrast, 1 + contrast)
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = (image - mean) * factor + mean
    if brightness:
        # As Keras' RandomBrightness on a 0..255 range: one offset for the whole image.
        image = image + rng.uniform(-brightness, brightness) * 255.0
    return np.clip(image, 0.0, 255.0)


def crop_batch(photos: WholePhotos, rows: np.ndarray, size: int, seed: int, epoch: int, *, min_scale: float,
               flip: bool, brightness: float, contrast: float) -> np.ndarray:
    """(len(rows), size, size, 3) float32: each photo's crop for ``epoch``, from its own seeded generator."""
    out = np.empty((len(rows), size, size, 3), np.float32)
    for k, row in enumerate(rows):
        rng = np.random.default_rng([seed, epoch, int(row)])
        out[k] = augment_photo(photos[int(row)], size, rng, min_scale=min_scale, flip=flip,
                               brightness=brightness, contrast=contrast)
    return out


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training rows in ``epoch``: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, 7919]).permutation(count)
