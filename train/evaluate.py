"""Running a model over cached images, and the ``edgeclass evaluate`` engine."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edgeclass.device.bundle import read_labels
from edgeclass.device.errors import EdgeclassError
from edgeclass.device.bundle import ResizePolicy

from . import rundir
from .dataset import DatasetError, discover, scan
from .progress import progress_bar
from .report import compute_metrics, write_report

log = logging.getLogger(__name__)


def predict(model, images: np.ndarray, indices, batch_size: int = 64, description: str = "evaluating") -> np.ndarray:
    """Model outputs for rows ``indices`` of ``images`` (inference mode), with a progress bar."""
    indices = np.asarray(indices, dtype=np.int64)
    outputs = []
    with progress_bar(description, len(indices)) as advance:
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            batch = np.asarray(images[np.sort(rows)], dtype=np.float32)
            order = np.argsort(np.argsort(rows))  # undo the sort: output i belongs to rows[i]
            outputs.append(np.asarray(model.predict_on_batch(batch))[order])
            advance(len(rows))
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outputs).astype(np.float32)


def report_on(model, images: np.ndarray, indices, y_true, labels, report_dir: Path, *, history=None,
              extra: dict | None = None, batch_size: int = 64, names=None, val: tuple | None = None,
              no_fit_reason: str | None = None, run_dir: Path | None = None) -> dict:
    """Predict rows ``indices`` (true labels ``y_true``) and write the full report into ``report_dir``.

    ``names[row]`` is each image's path in the dataset (for the explained
    images); ``val = (scores, labels)`` are the validation split's scores,
    on which a temperature is fitted when they are not calibrated (without
    them the report only measures calibration, for ``no_fit_reason``).
    ``run_dir`` adds the run's configuration and search trials to the page.
    """
    from .calibrate import report_section
    from .explain import write_explanations
    from .page import build_page

    probs = predict(model, images, indices, batch_size)
    metrics = compute_metrics(y_true, probs.argmax(axis=1), labels)
    metrics.update(extra or {})
    metrics["calibration"], calibrated = report_section(probs, y_true, val, no_fit_reason)
    indices = np.asarray(indices)
    image = lambda k: np.asarray(images[indices[k]])  # noqa: E731
    write_report(report_dir, metrics, image, y_true, probs, history)
    write_explanations(report_dir, model, image, lambda k: names[indices[k]] if names is not None else str(indices[k]),
                       y_true, probs, labels, calibrated)
    build_page(report_dir, run_dir=run_dir)
    return metrics


def _model_and_labels(model_path: Path):
    """A training directory or a .keras file -> (model path, labels, input size, resize policy)."""
    if model_path.is_dir():
        run = rundir.load_training_dir(model_path)
        return run.model_path, list(run.labels), run.input_size, ResizePolicy(run.config["resize"]), run
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise EdgeclassError(f"{model_path}: expected a training directory or a .keras model file")
    labels_path = model_path.with_name(rundir.LABELS)
    if not labels_path.exists():
        raise EdgeclassError(f"{labels_path}: no labels file next to {model_path.name} (one label per line, line i = output i)")
    return model_path, read_labels(labels_path), None, ResizePolicy.CENTER_CROP, None


def evaluate(model_path: Path, dataset: Path | None, report_dir: Path | None, split: str = "test",
             batch_size: int = 64, workers: int = 0) -> tuple[dict, Path]:
    """Evaluate a trained model on a folder dataset (or its own test split) and write a report.

    ``dataset`` may be folder-per-class (every image is evaluated) or split
    into train/val/test (``split`` is evaluated). Class folders must be labels
    the model knows.
    """
    import keras

    model_file, labels, size, policy, run = _model_and_labels(Path(model_path))
    own_split = dataset is None
    if own_split:
        if run is None:
            raise EdgeclassError(f"{model_path}: give a DATASET folder (only a training directory has its own test split)")
        dataset = Path(run.split["data_dir"])
        only = {item["path"] for item in run.split.get(split, [])}
        if not only:
            raise EdgeclassError(f"{run.path / rundir.SPLIT}: the {split} split is empty")
    else:
        only = None
    layout = discover(dataset)
    if only is not None:
        layout.items = [item for item in layout.items if item.rel in only]
    elif layout.presplit:
        if split not in layout.split_dirs:
            raise DatasetError(f"{layout.data_dir}: has no {split} folder (found {', '.join(layout.split_dirs)})")
        layout.items = [item for item in layout.items if item.split == split]
    unknown = sorted({item.label for item in layout.items} - set(labels))
    if unknown:
        raise DatasetError(
            f"{layout.data_dir}: class folder(s) {', '.join(unknown)} are not labels of the model "
            f"({', '.join(labels)})"
        )
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as exc:
        raise EdgeclassError(f"{model_file}: cannot be loaded as a Keras model ({exc})") from None
    shape = model.inputs[0].shape
    if size is None:
        size = int(shape[1])
    if model.outputs[0].shape[-1] != len(labels):
        raise EdgeclassError(f"{model_file}: outputs {model.outputs[0].shape[-1]} scores but there are {len(labels)} labels")
    report_dir = Path(report_dir) if report_dir else (run.report_dir if own_split else Path("report"))
    with tempfile.TemporaryDirectory(prefix="edgeclass-eval-") as tmp:
        cache = np.lib.format.open_memmap(Path(tmp) / "cache.npy", mode="w+", dtype=np.uint8,
                                          shape=(len(layout.items), size, size, 3))
        records = scan(layout, cache, (size, size), policy, workers, description="reading images")
        for record in records:
            if not record.ok:
                log.warning("skipped %s: %s", layout.data_dir / record.item.rel, record.error)
        rows = [i for i, r in enumerate(records) if r.ok]
        if not rows:
            raise DatasetError(f"{layout.data_dir}: no readable images to evaluate")
        index = {label: i for i, label in enumerate(labels)}
        y_true = np.array([index[records[i].item.label] for i in rows])
        extra = {"model": str(model_file), "dataset": str(layout.data_dir), "split": split if (layout.presplit or only) else None,
                 "skipped": [{"path": r.item.rel, "reason": r.error} for r in records if not r.ok]}
        metrics = report_on(model, cache, rows, y_true, labels, report_dir, extra=extra, batch_size=batch_size,
                            names=[r.item.rel for r in records],
                            no_fit_reason="edgeclass evaluate measures calibration only (the run's report and convert fit the temperature)")
        del cache
    return metrics, report_dir

