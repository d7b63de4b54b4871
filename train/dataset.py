"""Finding a dataset's images and reading each one once.

Two layouts are accepted::

    DATA/<label>/**/*.jpg                      folder per class (we split it)
    DATA/{train,val,test}/<label>/**/*.jpg     already split (val or test may be
                                               missing: carved from train)

:func:`scan` reads every file once (in parallel threads: OpenCV and hashlib
release the GIL), hashes it for duplicate detection, checks and describes it with Pillow,
decodes it with the device's decoder and resizes it with the device's resize
into a uint8 cache, so the network trains on exactly the pixels the Pi will
feed it. The user's files are only ever read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeclass.device.errors import EdgeclassError, ImageError
from edgeclass.device.pipeline.images import decode_image, is_image_path, list_images
from edgeclass.device.bundle import ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image

from .imageinfo import ImageInfo, inspect_image, needs_handling
from .near_duplicates import perceptual_hash, thumbnail
from .progress import progress_bar

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Folder names accepted for each split of an already split dataset.
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


class DatasetError(EdgeclassError):
    """The dataset cannot be trained on as it is (the message says why and how to fix it)."""


@dataclass(frozen=True)
class Item:
    """One image file of the dataset."""

    rel: str  # path relative to the data dir, with forward slashes
    label: str
    split: str | None = None  # set when the folder layout says it


@dataclass
class Layout:
    """What :func:`discover` found under a data directory."""

    data_dir: Path
    presplit: bool
    labels: list[str]
    items: list[Item]
    non_images: list[str] = field(default_factory=list)  # files that are not images, by suffix
    stray: list[str] = field(default_factory=list)  # images outside any class folder
    empty_classes: list[str] = field(default_factory=list)
    split_dirs: dict[str, str] = field(default_factory=dict)  # split -> folder name used


@dataclass
class Record:
    """One file after :func:`scan`: its hash, Pillow's description, and whether it decoded."""

    item: Item
    size: int = 0
    sha256: str = ""
    info: ImageInfo | None = None
    error: str | None = None  # why the file is skipped (unreadable, truncated)
    phash: int | None = None  # perceptual hash of the decoded image (near-duplicate detection)
    thumb: bytes | None = None  # 16x16 grey thumbnail: confirms that two near-duplicates are one picture

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"path": self.item.rel, "label": self.item.label, "split": self.item.split, "size": self.size,
                "sha256": self.sha256, "info": list(self.info) if self.info else None, "error": self.error,
                "phash": None if self.phash is None else f"{self.phash:016x}",
                "thumb": None if self.thumb is None else self.thumb.hex()}

    @classmethod
    def from_json(cls, data: dict) -> "Record":
        info = ImageInfo(*data["info"]) if data.get("info") else None
        phash = int(data["phash"], 16) if data.get("phash") else None
        thumb = bytes.fromhex(data["thumb"]) if data.get("thumb") else None
        return cls(Item(data["path"], data["label"], data.get("split")), data["size"], data["sha256"], info, data["error"],
                   phash, thumb)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def discover(data_dir: str | Path) -> Layout:
    """List a dataset's class folders and image files; refuse layouts that cannot work."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder (expected a folder with one sub-folder of images per class)")
    subdirs = {p.name: p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    found = {split: next((n for n in names if n in subdirs), None) for split, names in SPLIT_ALIASES.items()}
    presplit = found["train"] is not None and (found["val"] is not None or found["test"] is not None)
    layout = Layout(data_dir, presplit, [], [])
    roots: list[tuple[str | None, Path]]
    if presplit:
        layout.split_dirs = {s: n for s, n in found.items() if n}
        roots = [(s, subdirs[n]) for s, n in layout.split_dirs.items()]
        extra = sorted(set(subdirs) - set(layout.split_dirs.values()))
        if extra:
            log.warning("%s: folders %s are not train/val/test and are ignored", data_dir, ", ".join(extra))
    else:
        roots = [(None, data_dir)]
    labels: set[str] = set()
    train_labels: set[str] = set()
    for split, root in roots:
        for child in sorted(root.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_file():
                (layout.stray if is_image_path(child) else layout.non_images).append(_rel(child, data_dir))
                continue
            if not child.is_dir():
                continue
            listing = list_images([child])
            layout.non_images += [_rel(p, data_dir) for p in listing.skipped]
            if not listing.images:
                layout.empty_classes.append(_rel(child, data_dir))
            labels.add(child.name)
            if split in (None, "train"):
                train_labels.add(child.name)
            layout.items += [Item(_rel(p, data_dir), child.name, split) for p in listing.images]
    layout.labels = sorted(labels)
    _refuse_bad_layout(layout, train_labels)
    return layout


def _refuse_bad_layout(layout: Layout, train_labels: set[str]) -> None:
    where = layout.data_dir
    expected = "expected DATA/<label>/*.jpg, one sub-folder per class"
    if not layout.labels:
        what = f"{len(layout.stray)} images but no class folders" if layout.stray else "no class folders"
        raise DatasetError(f"{where}: {what} ({expected})")
    if layout.empty_classes:
        names = ", ".join(layout.empty_classes)
        raise DatasetError(f"{where}: class folder(s) with no images: {names} (add images or remove the folder)")
    if len(layout.labels) < 2:
        raise DatasetError(
            f"{where}: found 1 class ({layout.labels[0]}), a classifier needs at least 2 ({expected})"
        )
    if layout.presplit:
        missing = sorted(set(layout.labels) - train_labels)
        if missing:
            raise DatasetError(
                f"{where}/{layout.split_dirs['train']}: no folder for class(es) {', '.join(missing)} "
                "that appear in val/test (every class needs training images)"
            )


def scan(
    layout: Layout,
    cache: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    policy: ResizePolicy = ResizePolicy.CENTER_CROP,
    workers: int = 0,
    description: str = "scanning",
    decode: bool = True,
    whole=None,
) -> list[Record]:
    """Read, hash, check (with Pillow) and decode every file, with a progress bar.

    When ``cache`` (an ``(N, H, W, 3)`` uint8 array, e.g. a memmap) is given,
    row ``i`` receives ``layout.items[i]`` decoded by the device decoder and
    resized by ``resize_image(rgb, H, W, policy)``. Unreadable or truncated
    files are recorded with an ``error`` and left out of training, never touched.
    Each decoded image also gets its perceptual hash (near-duplicate groups).
    ``decode=False`` only reads and hashes (to check a saved scan). ``whole``
    (a :class:`~edgeclass.train.crops.WholePhotoWriter`) also receives every
    decoded photo uncropped, for training on random crops.
    """
    if cache is not None and size is None:
        size = cache.shape[1:3]
    workers = workers or os.cpu_count() or 1

    def work(i: int) -> Record:
        item = layout.items[i]
        path = layout.data_dir / item.rel
        record = Record(item)
        try:
            data = path.read_bytes()
        except OSError as exc:
            record.error = f"cannot read ({exc.strerror})"
            return record
        record.size = len(data)
        record.sha256 = hashlib.sha256(data).hexdigest()
        if not decode:
            return record
        record.info = inspect_image(data)
        if record.info.truncated:
            record.error = f"truncated {record.info.format.upper()} (the file ends before the image data does)"
            return record
        try:
            # decode_image is the body of edgeclass.device.pipeline.images.load_image: same decoder, same result.
            rgb = decode_image(data, str(path))
        except ImageError:
            record.error = "not a readable image (corrupt or unsupported format)"
            return record
        record.phash = perceptual_hash(rgb)
        record.thumb = thumbnail(rgb)
        if cache is not None:
            cache[i] = resize_image(rgb, size[0], size[1], policy)
        if whole is not None:
            whole.put(i, rgb)
        return record

    records: list[Record | None] = [None] * len(layout.items)
    with progress_bar(description, len(layout.items)) as advance, ThreadPoolExecutor(workers) as pool:
        for i, record in zip(range(len(layout.items)), pool.map(work, range(len(layout.items)))):
            records[i] = record
            advance()
    return records  # type: ignore[return-value]


def handled_counts(records: list[Record]) -> dict[str, int]:
    """How many readable files needed each kind of decoder handling (grayscale, exif-rotated, ...)."""
    counts: dict[str, int] = {}
    for record in records:
        if record.ok and record.info is not None:
            for tag in needs_handling(record.info):
                counts[tag] = counts.get(tag, 0) + 1
    return dict(sorted(counts.items()))


def fingerprint(records: list[Record]) -> str:
    """sha256 over (label, path, content hash) of every readable file: names the exact data trained on."""
    digest = hashlib.sha256()
    for record in sorted((r for r in records if r.ok), key=lambda r: r.item.rel):
        digest.update(f"{record.item.label}\t{record.item.rel}\t{record.sha256}\n".encode())
    return digest.hexdigest()
