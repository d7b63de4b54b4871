"""The training directory: what ``edgeclass train`` writes and ``edgeclass convert`` reads.

Layout::

    OUT/
      model.keras        the float Keras model (float32 weights and policy).
                         Input: float32 (batch, H, W, 3), RGB pixel values 0..255,
                         already resized by edgeclass.device.preprocess.resize_image
                         with the policy in config.json. Normalisation happens
                         inside the model. Output: softmax probabilities, one per label.
      labels.txt         one label per line, line i = output i (class folder names, sorted)
      config.json        the full training configuration (see TrainingConfig keys below)
      split.json         {"data_dir": str, "seed": int, "ratios": [train, val, test] or null,
                          "train"|"val"|"test": [{"path": str (relative to data_dir), "label": str}, ...]}
      dataset.json       the audit and the dataset fingerprint
      report/            metrics.json, classification_report.txt, PNGs
      checkpoints/       resume state (not needed by convert)
      search/            train --search only: trials.json (one record per trial) and trial-N/

config.json holds at least: backbone, alpha, input_size, resize (a
ResizePolicy value), weights, epochs, seed, edgeclass_version, and
"normalization": "model".

This module is stdlib-only so the converter and tests can read a training
directory without importing TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeclass.device.bundle import read_labels
from edgeclass.device.errors import EdgeclassError

MODEL = "model.keras"
LABELS = "labels.txt"
CONFIG = "config.json"
SPLIT = "split.json"
DATASET = "dataset.json"
REPORT = "report"
CHECKPOINTS = "checkpoints"
HISTORY_CSV = "history.csv"  # the per-epoch log: logs/ of a run, and each search trial's folder
REQUIRED = (MODEL, LABELS, CONFIG, SPLIT)


class TrainingDirError(EdgeclassError):
    """A training directory is incomplete or inconsistent."""


@dataclass(frozen=True)
class TrainingDir:
    """A complete training directory, read without TensorFlow."""

    path: Path
    config: dict
    labels: tuple[str, ...]
    split: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    def split_items(self, name: str) -> list[tuple[Path, int]]:
        """``(absolute image path, label index)`` for one split: train, val or test."""
        data_dir = Path(self.split["data_dir"])
        index = {label: i for i, label in enumerate(self.labels)}
        return [(data_dir / item["path"], index[item["label"]]) for item in self.split.get(name, [])]


def load_training_dir(path: str | Path) -> TrainingDir:
    """Read and check a training directory; :class:`TrainingDirError` names what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise TrainingDirError(f"{path}: no such training directory (make one with 'edgeclass train')")
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise TrainingDirError(
            f"{path}: incomplete training directory, missing {', '.join(missing)} "
            "(did training finish? 'edgeclass train --resume' continues an interrupted run)"
        )
    config = _read_json(path / CONFIG)
    split = _read_json(path / SPLIT)
    labels = tuple(read_labels(path / LABELS))
    for key in ("input_size", "resize"):
        if key not in config:
            raise TrainingDirError(f"{path / CONFIG}: missing {key!r}")
    unknown = {item["label"] for name in ("train", "val", "test") for item in split.get(name, [])} - set(labels)
    if unknown:
        raise TrainingDirError(f"{path / SPLIT}: labels {sorted(unknown)} are not in {LABELS}")
    return TrainingDir(path, config, labels, split)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingDirError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainingDirError(f"{path}: expected a JSON object")
    return data
