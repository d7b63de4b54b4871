"""Measuring a bundle's accuracy on labelled images, on the machine that will run it: ``bundle evaluate``.

Every image goes the way a frame goes in ``edgeclass run``: decoded by
:func:`~.images.load_image`, turned into the input tensor by the bundle's
:class:`~.preprocess.Preprocessor`, scored by the classifier that
:func:`~.classifier.open_classifier` builds (the Edge TPU model when it can
run, else the CPU model). So the accuracy printed is the accuracy of this
device's whole path: its decoder, its interpreter build and its CPU's int8
kernels, which is not exactly the workstation's.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..bundle import Bundle
from ..errors import EdgeclassError, ImageError
from .calibration import calibration_lines, evaluation_calibration, plot_reliability
from .classifier import Classifier, top_k
from .dataset import LabelledImage
from .images import load_image
from .interpreter import backend_version
from .machine import describe_machine, machine_summary
from .metrics import classification_table, compute_metrics, confusion_text, plot_confusion_matrices
from .preprocess import Preprocessor

DEFAULT_TOP_K = 3


class EvaluationError(EdgeclassError):
    """An evaluation cannot be compared or written as asked."""


@dataclass(frozen=True)
class ImageResult:
    """One image's answer: its true label, the top-k labels and scores, and the inference time."""

    rel: str
    label: str
    top: list  # [(label, score)], best first
    latency_ms: float
    label_index: int  # the true label's output index
    predicted_index: int

    @property
    def predicted(self) -> str:
        return self.top[0][0]

    def to_json(self) -> dict:
        return {"path": self.rel, "label": self.label, "predicted": self.predicted,
                "score": round(self.top[0][1], 6), "correct": self.predicted == self.label,
                "top_k": [{"label": name, "score": round(score, 6)} for name, score in self.top],
                "latency_ms": round(self.latency_ms, 3)}


@dataclass
class Evaluation:
    """The results of :func:`evaluate` and everything needed to say where they came from."""

    bundle: Bundle
    results: list[ImageResult]
    skipped: list[tuple[str, str]]  # (path, why)
    k: int
    backend: dict
    machine: dict
    source: dict = field(default_factory=dict)  # dataset, split file, split
    compared_with: dict | None = None  # another machine's evaluation of the same photos (see compare_with)

    def metrics(self) -> dict:
        y_true = [r.label_index for r in self.results]
        y_pred = [r.predicted_index for r in self.results]
        return compute_metrics(y_true, y_pred, self.bundle.labels)

    def to_json(self) -> dict:
        """The ``--json`` object (and ``metrics.json`` of ``-o DIR``)."""
        m = self.metrics()
        latencies = [r.latency_ms for r in self.results]
        in_top = sum(r.label in [name for name, _ in r.top] for r in self.results)
        correct = sum(r.predicted_index == r.label_index for r in self.results)
        return {
            "bundle": self.bundle.name,
            "bundle_path": str(self.bundle.path),
            **self.source,
            "images": len(self.results),
            "skipped": [{"path": p, "error": e} for p, e in self.skipped],
            "accuracy": m["accuracy"],
            "correct": correct,
            "top_k": self.k,
            "top_k_accuracy": round(in_top / len(self.results), 4) if self.results else 0.0,
            "per_class": m["per_class"],
            "macro_avg": m["macro_avg"],
            "weighted_avg": m["weighted_avg"],
            "labels": m["labels"],
            "confusion_matrix": m["confusion_matrix"],
            # The figures convert records for the bundle's model (bundle.json metrics.calibration), from this machine's answers.
            "calibration": evaluation_calibration([r.top[0][1] for r in self.results],
                                                  [r.predicted_index == r.label_index for r in self.results]),
            "latency_ms": _percentiles(latencies),
            "backend": self.backend,
            "machine": self.machine,
            "bundle_metrics": _recorded(self.bundle),
            "compared_with": self.compared_with,
        }

    def predictions(self) -> list[dict]:
        return [r.to_json() for r in self.results]


def _percentiles(values: Sequence[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "mean": None}
    return {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "mean": round(statistics.fmean(values), 3)}


def _recorded(bundle: Bundle) -> dict:
    """What the bundle says its accuracy was when it was made, and on which machine."""
    keys = ("int8_accuracy", "float_accuracy", "float_tflite_accuracy", "agreement", "split", "test_images", "measured_on")
    return {k: bundle.metrics[k] for k in keys if k in bundle.metrics}


def describe_backend(classifier: Classifier) -> dict:
    """Which interpreter ran the model, where, with how many threads."""
    return {"interpreter": classifier.backend, "version": backend_version(classifier.backend),
            "model": classifier.model_path.name, "edgetpu": classifier.on_edgetpu, "threads": classifier.num_threads}


def evaluate(bundle: Bundle, classifier: Classifier, items: Iterable[LabelledImage], k: int = DEFAULT_TOP_K,
             on_image: Callable[[ImageResult | None], None] | None = None, source: dict | None = None) -> Evaluation:
    """Classify every labelled image through the device's path; unreadable files are skipped and listed.

    ``on_image`` is called after each image (with None for a skipped one), for progress.
    Latency is the interpreter's time per image (set input, invoke, read
    scores); decoding and preprocessing are not in it.
    """
    preprocess = Preprocessor(bundle.input)
    k = max(1, min(k, len(bundle.labels)))
    index: dict[str, int] = {}
    for i, label in enumerate(bundle.labels):
        index.setdefault(label, i)  # a repeated label (ImageNet's "crane") counts as its first output
    results, skipped = [], []
    for item in items:
        try:
            rgb = load_image(item.path)
        except ImageError as exc:
            skipped.append((item.rel, str(exc)))
            if on_image:
                on_image(None)
            continue
        tensor = preprocess(rgb)
        start = time.perf_counter()
        scores = classifier.scores(tensor)
        ms = (time.perf_counter() - start) * 1000
        top = [(s.label, s.score) for s in top_k(scores, bundle.labels, k)]
        predicted = int(np.argmax(scores))  # the first best index, as top_k breaks ties
        result = ImageResult(item.rel, item.label, top, ms, index[item.label], index[bundle.labels[predicted]])
        results.append(result)
        if on_image:
            on_image(result)
    return Evaluation(bundle, results, skipped, k, describe_backend(classifier), describe_machine(), dict(source or {}))


def report_text(evaluation: Evaluation) -> str:
    """The human-readable report: what ran where, accuracy, latency, per-class table, confusion matrix."""
    data = evaluation.to_json()
    backend, lat = data["backend"], data["latency_ms"]
    where = "Edge TPU" if backend["edgetpu"] else "CPU"
    count = backend["threads"]
    threads = f", {count} thread{'s' if count != 1 else ''}" if count else ""
    source = data.get("dataset", "")
    if data.get("split_file"):
        source += f", {data['split']} split of {data['split_file']}"
    lines = [
        f"bundle      {data['bundle']} ({backend['model']} on the {where}, "
        f"{' '.join(filter(None, (backend['interpreter'], backend['version'])))}{threads})",
        f"machine     {machine_summary(data['machine'])}",
        f"images      {data['images']} from {source}" + (f" ({len(data['skipped'])} unreadable, skipped)" if data["skipped"] else ""),
        f"accuracy    {data['accuracy']:.2%} ({data['correct']} of {data['images']}), top-{data['top_k']} {data['top_k_accuracy']:.2%}",
    ]
    if lat["p50"] is not None:
        timing = f"latency     p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms per inference"
        if data["machine"].get("emulated"):
            timing += " (emulated: not this CPU's speed)"
        lines.append(timing)
    recorded = data["bundle_metrics"]
    if "int8_accuracy" in recorded:
        on = recorded.get("measured_on")
        lines.append(f"bundle.json int8 {recorded['int8_accuracy']:.2%} on {recorded.get('test_images', '?')} "
                     f"{recorded.get('split', 'test')} images" + (f", measured on {machine_summary(on)}" if on else ""))
    other = data["compared_with"]
    if other:
        drop = other["drop_pp"]
        change = f"{abs(drop):.2f} points {'lower' if drop >= 0 else 'higher'} here"
        lines.append(f"compared    {other['accuracy']:.2%} on the same {other['images']} images on "
                     f"{machine_summary(other['machine'] or {})}: {change}, top-1 agreement {other['agreement']:.2%}")
        lines += [f"differs     {d['path']}: {d['other'][0]} {d['other'][1]:.3f} here, {d['reference'][0]} {d['reference'][1]:.3f} there"
                  for d in other["disagree"]]
    lines += [""] + calibration_lines(data["calibration"])
    lines += ["", classification_table({**data, "num_images": data["images"]}).rstrip("\n"), "", "confusion matrix (rows: true label, columns: predicted)",
              confusion_text(data["confusion_matrix"], data["labels"]).rstrip("\n")]
    lines += [f"skipped {s['path']}: {s['error']}" for s in data["skipped"]]
    return "\n".join(lines) + "\n"


PREDICTIONS = "predictions.jsonl"


def write_predictions(evaluation: Evaluation, path: Path) -> None:
    """One JSON object per image, in dataset order (the file ``--predictions`` names)."""
    with open(path, "w", encoding="utf-8") as fh:
        for line in evaluation.predictions():
            fh.write(json.dumps(line) + "\n")


def write_report(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """``metrics.json``, ``report.txt``, ``predictions.jsonl`` and, where matplotlib is installed,
    ``confusion_matrix.png``; such a folder is what ``--compare-with`` reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "report.txt", out_dir / PREDICTIONS]
    write_predictions(evaluation, written[2])
    written[0].write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")
    written[1].write_text(report_text(evaluation), encoding="utf-8")
    png = _plot_confusion(evaluation, out_dir / "confusion_matrix.png")
    reliability = _plot_reliability(evaluation, out_dir / "reliability.png")
    return written + [p for p in (png, reliability) if p]


def _plot_confusion(evaluation: Evaluation, path: Path) -> Path | None:
    """A confusion-matrix PNG, or None without matplotlib (the device extra does not install it)."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    data = evaluation.to_json()
    title = f"{data['machine']['machine']}: accuracy {data['accuracy']:.3f} on {data['images']} images"
    plot_confusion_matrices([(title, np.asarray(data["confusion_matrix"]))], data["labels"], path)
    return path


def _plot_reliability(evaluation: Evaluation, path: Path) -> Path | None:
    """The reliability diagram convert draws, of this machine's answers; None without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None or not evaluation.results:
        return None
    data = evaluation.to_json()
    plot_reliability([(f"{data['machine']['machine']}: {data['images']} images", [("this machine", data["calibration"])])], path)
    return path


def compare_predictions(reference: Sequence[dict], other: Sequence[dict]) -> dict:
    """Image-by-image comparison of two ``--predictions`` lists of the same photos (say x86 and the Pi).

    Returns both accuracies, the top-1 agreement, the largest difference of
    the top-1 score, and every image whose top-1 label differs.
    """
    theirs = {p["path"]: p for p in other}
    if set(theirs) != {p["path"] for p in reference} or len(theirs) != len(reference):
        raise ValueError("the two prediction lists are not of the same images")
    disagree = [{"path": p["path"], "label": p["label"], "reference": [p["predicted"], p["score"]],
                 "other": [theirs[p["path"]]["predicted"], theirs[p["path"]]["score"]]}
                for p in reference if p["predicted"] != theirs[p["path"]]["predicted"]]
    n = len(reference)
    return {
        "images": n,
        "reference_accuracy": round(sum(p["correct"] for p in reference) / n, 4) if n else None,
        "other_accuracy": round(sum(p["correct"] for p in other) / n, 4) if n else None,
        "agreement": round(1 - len(disagree) / n, 4) if n else None,
        "max_score_difference": round(max(abs(p["score"] - theirs[p["path"]]["score"]) for p in reference), 4) if n else None,
        "disagree": disagree,
    }


def read_evaluation(folder: Path) -> tuple[dict, list[dict]]:
    """``(metrics, predictions)`` of another evaluation's ``-o`` folder, or :class:`EvaluationError` naming it."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        lines = (folder / PREDICTIONS).read_text(encoding="utf-8").splitlines()
        return metrics, [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError as exc:
        raise EvaluationError(f"{folder}: no {Path(exc.filename).name} (expected the -o folder of another "
                              "'edgeclass bundle evaluate')") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{folder}: not an evaluation folder ({exc})") from None


def check_same_photos(folder: Path, predictions: Sequence[dict], rels: Sequence[str]) -> None:
    """Refuse to compare with an evaluation of other photos (before spending time on this one)."""
    if sorted(p["path"] for p in predictions) != sorted(rels):
        raise EvaluationError(f"{folder}: evaluated {len(predictions)} other images than these {len(rels)}; "
                              "compare evaluations of the same photos")


def compare_with(evaluation: Evaluation, folder: Path, metrics: dict, theirs: Sequence[dict]) -> dict:
    """This evaluation next to another machine's of the same photos: its accuracy, machine, the agreement.

    ``drop_pp`` is how many accuracy points this machine is below the other
    one on these images (negative: above).
    """
    check_same_photos(folder, theirs, [r.rel for r in evaluation.results])
    c = compare_predictions(theirs, evaluation.predictions())
    return {"folder": str(folder), "machine": metrics.get("machine"), "backend": metrics.get("backend"),
            "images": c["images"], "accuracy": c["reference_accuracy"], "agreement": c["agreement"],
            "drop_pp": round(100 * (c["reference_accuracy"] - c["other_accuracy"]), 3) if c["images"] else None,
            "max_score_difference": c["max_score_difference"], "disagree": c["disagree"]}
