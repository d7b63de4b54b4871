"""Labelled images to evaluate on: a folder per class, or one split of a training run's ``split.json``.

``split.json`` is written by ``edgeclass train``; :func:`read_split_file` is
the one reader the device uses for it, and it accepts both formats the trainer
has written:

- seeded stratified split (``{"data_dir", "seed", "ratios", "presplit",
  "train"|"val"|"test": [{"path", "label"}, ...]}``);
- content-hash split (the same keys plus ``"method": "content-hash"``,
  ``"near_duplicate_bits"``, a ``"sha256"`` per photo and an ``"excluded"``
  list of photos left out of every split).

Paths in a split are relative to the dataset folder. The folder given on the
command line wins over the ``data_dir`` recorded at training time (a Pi holds
a copy of the photos somewhere else); when a photo carries its ``sha256`` the
file found must have those bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple, Sequence

from ..bundle import sha256_file
from ..errors import EdgeclassError
from .images import is_image_path

SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.json"


class DatasetError(EdgeclassError):
    """A dataset folder or split file cannot give the labelled images asked for."""


class LabelledImage(NamedTuple):
    """One image file and its true label; ``rel`` is its path inside the dataset folder (``/``-separated)."""

    path: Path
    rel: str
    label: str


def _check_labels(found: Sequence[str], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(found) - set(known))
    if unknown:
        shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        raise DatasetError(
            f"{where}: label(s) {', '.join(unknown)} are not among the bundle's {len(known)} labels ({shown}); "
            "evaluate with the bundle trained on these classes, or leave those folders out"
        )


def list_class_folders(data_dir: Path, labels: Sequence[str]) -> list[LabelledImage]:
    """Every image under ``data_dir/<label>/`` (recursively, sorted); folder names must be bundle labels."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such dataset folder (expected one sub-folder of images per label)")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{data_dir}: has no class folders (expected one sub-folder of images per label)")
    names = [p.name for p in folders]
    if set(names) & set(SPLITS) and not set(names) & set(labels):
        raise DatasetError(
            f"{data_dir}: holds {'/'.join(n for n in SPLITS if n in names)} folders, not class folders; "
            f"pass one of them (for example {data_dir / 'test'}) or use --split-file"
        )
    _check_labels(names, labels, str(data_dir))
    items = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if is_image_path(path):
                items.append(LabelledImage(path, path.relative_to(data_dir).as_posix(), folder.name))
    if not items:
        raise DatasetError(f"{data_dir}: the class folders hold no image files")
    return items


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such split file (a training run's {SPLIT_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: expected a JSON object with train/val/test lists, got {type(doc).__name__}")
    return doc


def split_entries(path: Path, split: str) -> tuple[dict, list[dict]]:
    """The parsed split file and its ``split`` entries, each checked to have a relative path and a label."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_FILE
    if split not in SPLITS:
        raise DatasetError(f"--split is {split!r}, expected one of {', '.join(SPLITS)}")
    doc = _read_json(path)
    entries = doc.get(split)
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: has no {split!r} list (expected a split.json written by 'edgeclass train')")
    for number, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("label"), str)):
            raise DatasetError(f"{path}: {split}[{number}] is {entry!r}, expected {{\"path\": ..., \"label\": ...}}")
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DatasetError(f"{path}: {split}[{number}] path {entry['path']!r} is not inside the dataset folder")
    return doc, entries


def read_split_file(path: Path, split: str, data_dir: Path, labels: Sequence[str]) -> list[LabelledImage]:
    """The ``split`` photos of a split file (see module docstring), found under ``data_dir``.

    Refuses, naming the files: labels the bundle does not know, photos that
    are missing under ``data_dir``, and photos whose bytes differ from the
    ``sha256`` the split recorded.
    """
    path = Path(path)
    where = path / SPLIT_FILE if path.is_dir() else path
    doc, entries = split_entries(path, split)
    if not entries:
        raise DatasetError(f"{where}: the {split} split is empty")
    _check_labels([e["label"] for e in entries], labels, f"{where} ({split} split)")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such dataset folder (the folder {where.name}'s paths are relative to)")
    items = [LabelledImage(data_dir / e["path"], Path(e["path"]).as_posix(), e["label"]) for e in entries]
    missing = [item.rel for item in items if not item.path.is_file()]
    if missing:
        recorded = doc.get("data_dir")
        raise DatasetError(
            f"{data_dir}: {len(missing)} of the {len(items)} {split} photos listed in {where} are missing "
            f"(first: {missing[0]}); pass the folder the split's paths are relative to"
            + (f" (it was {recorded} when the model was trained)" if recorded else "")
        )
    changed = [item.rel for item, e in zip(items, entries) if e.get("sha256") and sha256_file(item.path) != e["sha256"]]
    if changed:
        raise DatasetError(
            f"{data_dir}: {len(changed)} {split} photo(s) differ from the ones {where} recorded (first: {changed[0]}): "
            "the dataset changed since training; evaluate on the photos the split was made from"
        )
    return items


def stratified_sample(items: Sequence[LabelledImage], size: int) -> list[LabelledImage]:
    """At most ``size`` items, classes as even as the data allow, the same ones every time.

    Classes are visited round-robin in label order, each in an order fixed by
    a hash of the photos' paths (spread over the class, not its first file
    names), so a small sample still covers every class, and two machines given
    the same list pick the same photos.
    """
    by_label: dict[str, list[LabelledImage]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    queues = [sorted(group, key=lambda i: hashlib.sha256(i.rel.encode()).hexdigest()) for _, group in sorted(by_label.items())]
    chosen: list[LabelledImage] = []
    depth = 0
    while len(chosen) < size and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < size:
                chosen.append(queue[depth])
        depth += 1
    order = {item.rel: n for n, item in enumerate(items)}
    return sorted(chosen, key=lambda i: order[i.rel])
