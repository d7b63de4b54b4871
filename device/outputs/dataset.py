"""A folder-per-class dataset on the device: where collected and sorted photos go.

``DATASET/<label>/<UTC time>.jpg`` is exactly what ``edgeclass train DATASET``
reads. Files are only ever added: a new photo's name is reserved with
``O_CREAT | O_EXCL`` (so nothing is overwritten, even by two savers at once)
and its bytes are renamed over the reservation only once complete, so a
crash leaves at worst an empty file, never half a JPEG under a real name.
Temporary and bookkeeping files start with a dot; the trainer skips them.
"""

from __future__ import annotations

import errno
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import EdgeclassError
from ..files import FILE_MODE, atomic_write
from ..pipeline.images import is_image_path

SPLIT_FOLDERS = ("train", "training", "val", "valid", "validation", "test", "testing")
_BAD_LABEL = re.compile(r"[/\\\x00-\x1f\x7f]")


class DatasetFolderError(EdgeclassError):
    """A dataset folder or label cannot be used to save photos."""


def check_label(label: str) -> str:
    """``label`` when it can be a class folder's name; a :class:`DatasetFolderError` otherwise."""
    if not label or label != label.strip() or label in (".", "..") or label.startswith(".") or _BAD_LABEL.search(label):
        raise DatasetFolderError(f"label {label!r} cannot be a folder name: use letters, digits, spaces, '-' or '_', "
                                 "not starting with a dot")
    if len(label.encode("utf-8")) > 100:
        raise DatasetFolderError(f"label {label[:20]!r}... is longer than 100 bytes")
    return label


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """The labels, each valid and none repeated."""
    seen: set[str] = set()
    for label in labels:
        check_label(label)
        if label in seen:
            raise DatasetFolderError(f"label {label!r} is given twice")
        seen.add(label)
    if not seen:
        raise DatasetFolderError("no labels: give at least one (--labels a,b,c)")
    return tuple(labels)


def utc_stamp(timestamp: float) -> str:
    """``20250611T081500.123Z``: sorts by time, safe in every file system."""
    when = datetime.fromtimestamp(timestamp, timezone.utc)
    return f"{when.strftime('%Y%m%dT%H%M%S')}.{when.microsecond // 1000:03d}Z"


class Dataset:
    """Adds photos to ``root/<label>/``; never overwrites or removes anything."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DatasetFolderError(f"{self.root}: is a file, expected a dataset folder (one sub-folder per class)")
        split = [name for name in SPLIT_FOLDERS if (self.root / name).is_dir()]
        if split:
            raise DatasetFolderError(f"{self.root}: is split into {'/'.join(split)} folders; "
                                     f"point at one of them (for example {self.root / split[0]}) to add photos to it")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetFolderError(f"{self.root}: cannot create the dataset folder ({exc.strerror})") from None

    def folder(self, label: str) -> Path:
        return self.root / check_label(label)

    def count(self, label: str) -> int:
        """Images in ``label``'s folder (what the trainer will see)."""
        try:
            with os.scandir(self.root / check_label(label)) as entries:
                return sum(1 for e in entries if not e.name.startswith(".") and e.is_file()
                           and is_image_path(Path(e.name)) and e.stat().st_size > 0)
        except FileNotFoundError:
            return 0

    def counts(self, labels: Sequence[str]) -> dict[str, int]:
        return {label: self.count(label) for label in labels}

    def reserve(self, label: str, stem: str, suffix: str = ".jpg") -> Path:
        """Create ``label/<stem><suffix>`` (or ``<stem>-2<suffix>``, ...) empty and exclusively; its path."""
        folder = self.folder(label)
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
            except FileExistsError:
                continue
            os.close(fd)
            return path
        raise DatasetFolderError(f"{folder}: 999 files named {stem}*{suffix} already")

    def add(self, label: str, data: bytes, timestamp: float, suffix: str = ".jpg") -> Path:
        """Save ``data`` as a new photo of ``label`` named after its UTC ``timestamp``; its path."""
        path = self.reserve(label, utc_stamp(timestamp), suffix)
        try:
            atomic_write(path, data)  # a temporary file renamed over the reservation
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise DatasetFolderError(f"{path.parent}: the disk is full; the photo was not saved") from None
            raise DatasetFolderError(f"{path}: cannot save the photo ({exc.strerror})") from None
        return path
