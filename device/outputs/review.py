"""Sorting the frames the uncertain-frame saver kept: into a class folder of the dataset, or away.

The saver (:mod:`.uncertain`) leaves ``<stem>.jpg`` + ``<stem>.json`` loose in
its folder. A person looks at each and says what it shows; the frame then
*moves* to ``DATASET/<label>/<stem>.jpg`` (its sidecar, with the label added,
to ``DATASET/<label>/.<stem>.json``: dot files are invisible to the trainer),
or is discarded (both files removed).

A move never leaves two copies and never loses the frame, whatever moment a
crash or power cut hits:

1. the intent is written into the sidecar (``"moving_to"``, atomically);
2. the JPEG gets its new name: a hard link in the same file system, else a
   copy flushed to storage and renamed into place;
3. the old name is removed; then the sidecar moves the same way.

:meth:`UncertainFrames.recover` (run before every listing and move) finishes
a move whose new name exists with the same bytes and undoes one whose new
name never appeared, so repeating a move is harmless. Only files named as the
saver names them are ever touched.
"""

from __future__ import annotations

import errno
import filecmp
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import NamedTuple, Sequence

from ..errors import EdgeclassError
from ..files import atomic_write, fsync_dir
from .dataset import Dataset, check_label
from .uncertain import SAVED_NAME

log = logging.getLogger(__name__)

_STEM = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_f\d+_[A-Za-z0-9._-]*$")


class ReviewError(EdgeclassError):
    """A frame cannot be sorted (unknown, already sorted elsewhere, disk trouble)."""


class Pending(NamedTuple):
    """One saved frame waiting for a person's label."""

    stem: str
    time: str | None
    guess: str | None
    top_score: float | None
    top_k: list[tuple[str, float]]  # the model's best labels, best first


class UncertainFrames:
    """The loose frames in ``directory``, and moving them into ``dataset``."""

    def __init__(self, directory: str | Path, dataset: Dataset, top_k: int = 3) -> None:
        self.directory = Path(directory)
        self.dataset = dataset
        self.top_k = top_k

    # -- reading ------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Frames waiting to be sorted, oldest first (half-done moves are finished or undone first)."""
        self.recover()
        try:
            names = sorted(e.name for e in os.scandir(self.directory) if e.is_file() and SAVED_NAME.match(e.name))
        except FileNotFoundError:
            return []
        stems = [n[:-4] for n in names if n.endswith(".jpg")]
        return [self._describe(stem) for stem in stems]

    def image(self, stem: str) -> Path:
        """The JPEG of a pending frame."""
        path = self.directory / f"{self._check_stem(stem)}.jpg"
        if not path.is_file():
            raise ReviewError(f"{path.name}: no such frame waiting to be sorted")
        return path

    def _describe(self, stem: str) -> Pending:
        sidecar = self._read_sidecar(stem) or {}
        scores = sidecar.get("scores") if isinstance(sidecar.get("scores"), dict) else {}
        ranked = sorted(((str(k), float(v)) for k, v in scores.items() if isinstance(v, (int, float))),
                        key=lambda kv: -kv[1])
        top = sidecar.get("top_score")
        return Pending(stem, sidecar.get("time"), sidecar.get("guess"),
                       float(top) if isinstance(top, (int, float)) else None, ranked[: self.top_k])

    def _read_sidecar(self, stem: str, folder: Path | None = None) -> dict | None:
        path = (folder or self.directory) / (f".{stem}.json" if folder else f"{stem}.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- sorting ------------------------------------------------------------------

    def move(self, stem: str, label: str, labels: Sequence[str] | None = None) -> Path:
        """Move a pending frame into ``DATASET/<label>/``; its new path (the same again when repeated)."""
        stem, label = self._check_stem(stem), check_label(label)
        if labels is not None and label not in labels:
            raise ReviewError(f"label {label!r} is not one of {', '.join(labels)}")
        self.recover()
        jpg, sidecar = self.directory / f"{stem}.jpg", self.directory / f"{stem}.json"
        target = self.dataset.folder(label) / f"{stem}.jpg"
        if not jpg.exists():
            if target.exists():  # moved already (a repeated click, or a retry after a crash)
                return target
            raise ReviewError(f"{jpg.name}: no such frame waiting to be sorted (sorted or removed already?)")
        record = self._read_sidecar(stem) or {}
        record["moving_to"] = f"{label}/{target.name}"
        if target.exists():
            if not _same_file(jpg, target):
                raise ReviewError(f"{target}: exists already and is not this frame; not overwriting it")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(sidecar, json.dumps(record, indent=1) + "\n")
            self._place(jpg, target)
        jpg.unlink(missing_ok=True)
        self._finish(stem, label, record)
        log.info("sorted %s into %s", jpg.name, target.parent)
        return target

    def discard(self, stem: str) -> None:
        """Remove a pending frame and its sidecar (the image first: a sidecar alone is never listed)."""
        stem = self._check_stem(stem)
        jpg = self.directory / f"{stem}.jpg"
        if not jpg.exists():
            raise ReviewError(f"{jpg.name}: no such frame waiting to be sorted (sorted or removed already?)")
        jpg.unlink(missing_ok=True)
        (self.directory / f"{stem}.json").unlink(missing_ok=True)

    def recover(self) -> None:
        """Finish or undo every move a crash interrupted (see the module docstring)."""
        try:
            sidecars = [e.name for e in os.scandir(self.directory) if e.name.endswith(".json") and SAVED_NAME.match(e.name)]
        except FileNotFoundError:
            return
        for name in sidecars:
            stem = name[:-5]
            record = self._read_sidecar(stem)
            moving_to = (record or {}).get("moving_to")
            if not isinstance(moving_to, str):
                continue
            label = moving_to.split("/", 1)[0]
            jpg, target = self.directory / f"{stem}.jpg", self.dataset.folder(label) / f"{stem}.jpg"
            if target.exists() and (not jpg.exists() or _same_file(jpg, target)):
                jpg.unlink(missing_ok=True)
                self._finish(stem, label, record)
                log.info("finished sorting %s into %s (interrupted before)", jpg.name, target.parent)
            elif jpg.exists():
                record.pop("moving_to")  # the new name never appeared: the frame is still only here
                atomic_write(self.directory / name, json.dumps(record, indent=1) + "\n")
                for stray in target.parent.glob(f".{target.name}.*.part"):
                    stray.unlink(missing_ok=True)

    def _finish(self, stem: str, label: str, record: dict) -> None:
        """The sidecar's last step: to ``DATASET/<label>/.<stem>.json`` with the label, then gone from here."""
        record.pop("moving_to", None)
        record.update(label=label, sorted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        atomic_write(self.dataset.folder(label) / f".{stem}.json", json.dumps(record, indent=1) + "\n", durable=True)
        (self.directory / f"{stem}.json").unlink(missing_ok=True)

    def _place(self, source: Path, target: Path) -> None:
        """Give ``source`` the name ``target`` too: a hard link, or a flushed copy renamed into place."""
        try:
            os.link(source, target)
            fsync_dir(target.parent)
            return
        except FileExistsError:
            raise ReviewError(f"{target}: exists already and is not this frame; not overwriting it") from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise ReviewError(f"{target}: cannot move the frame there ({exc.strerror})") from None
        # Another file system (a USB stick) or one without hard links (FAT): copy, flush, rename.
        part = target.parent / f".{target.name}.{os.getpid()}.part"
        try:
            shutil.copyfile(source, part)
            with open(part, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(part, target)
            fsync_dir(target.parent)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise ReviewError(f"{target}: cannot copy the frame there ({exc.strerror})") from None

    @staticmethod
    def _check_stem(stem: str) -> str:
        if not isinstance(stem, str) or not _STEM.match(stem):
            raise ReviewError(f"{stem!r} is not the name of a saved frame")
        return stem


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False
