"""What the run's page shows, read from the files the stages wrote (no TensorFlow).

Every figure on the page comes from one of these files, named on the page by
a *source* and a JSON pointer (``metrics:/per_class/daisy/f1``), so anyone
can check a number against the file it came from:

==========  ==================================================
source      file
==========  ==================================================
metrics     ``REPORT/metrics.json`` (the trainer's test report)
gradcam     ``REPORT/gradcam/gradcam.json`` (the explained images)
config      ``RUN/config.json``
trials      ``RUN/search/trials.json`` (``train --search``)
bundle      ``BUNDLE/report/metrics.json`` (``convert``: float vs int8)
==========  ==================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeclass.device.errors import EdgeclassError

from . import rundir
from .explain import GRADCAM_DIR, GRADCAM_INDEX

METRICS = "metrics.json"
CURVES_PNG = "training_curves.png"
RELIABILITY_PNG = "reliability.png"
TRIALS = Path("search") / "trials.json"
PAGE = "index.html"


class ReportError(EdgeclassError):
    """The files a page is built from are missing or unreadable."""


@dataclass
class PageSources:
    """Everything one page shows; ``None`` or empty where the run has no such part."""

    title: str
    metrics: dict
    config: dict = field(default_factory=dict)
    gradcam: list = field(default_factory=list)
    images: dict = field(default_factory=dict)  # file name in gradcam/ -> JPEG bytes
    curves_png: bytes | None = None
    reliability_png: bytes | None = None
    trials: list | None = None
    bundle: dict | None = None  # the bundle's report/metrics.json
    bundle_reliability_png: bytes | None = None
    bundle_path: str | None = None
    files: dict = field(default_factory=dict)  # source name -> the file it was read from

    @property
    def labels(self) -> list[str]:
        return list(self.metrics.get("labels") or (self.bundle or {}).get("labels") or [])

    @property
    def labels_source(self) -> str:
        return "metrics" if self.metrics.get("labels") else "bundle"


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); {what}") from None


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def read_report(report_dir: Path | None, run_dir: Path | None = None, title: str | None = None,
                required: bool = True) -> PageSources:
    """The trainer's side: ``report_dir`` (metrics.json, figures, gradcam/) and, when given, the run's files.

    With ``required=False`` a missing ``metrics.json`` leaves the training side
    empty (a run trained by another tool still gets a page for its bundle).
    """
    # Absolute paths: the page names its files for whoever opens it, wherever it was built from.
    report_dir = Path(report_dir).resolve() if report_dir is not None else None
    run_dir = Path(run_dir).resolve() if run_dir is not None else None
    named = run_dir if run_dir is not None else report_dir
    sources = PageSources(title=title or (Path(named).resolve().name if named is not None else "edgeclass"), metrics={})
    if report_dir is not None and ((report_dir / METRICS).is_file() or required):
        sources.metrics = _json(report_dir / METRICS, "the report's figures; 'edgeclass evaluate RUN' makes them")
        sources.files["metrics"] = str(report_dir / METRICS)
    if sources.metrics:
        _read_figures(sources, report_dir)
    if run_dir is not None:
        run_dir = Path(run_dir)
        if (run_dir / rundir.CONFIG).is_file():
            sources.config = _json(run_dir / rundir.CONFIG, "the run's configuration")
            sources.files["config"] = str(run_dir / rundir.CONFIG)
        if (run_dir / TRIALS).is_file():
            sources.trials = _json(run_dir / TRIALS, "the hyperparameter search's trials")
            sources.files["trials"] = str(run_dir / TRIALS)
        if sources.curves_png is None:
            sources.curves_png = _curves_from_history(run_dir)
    return sources


def _read_figures(sources: PageSources, report_dir: Path) -> None:
    index = report_dir / GRADCAM_DIR / GRADCAM_INDEX
    if index.is_file():
        sources.gradcam = _json(index, "the explained images")
        sources.files["gradcam"] = str(index)
        for entry in sources.gradcam:
            for key in ("image", "heat_predicted", "heat_true"):
                name = entry.get(key)
                if name and name not in sources.images:
                    data = _bytes(report_dir / GRADCAM_DIR / name)
                    if data is None:
                        raise ReportError(f"{report_dir / GRADCAM_DIR / name}: missing (listed in {index})")
                    sources.images[name] = data
    sources.curves_png = _bytes(report_dir / CURVES_PNG)
    sources.reliability_png = _bytes(report_dir / RELIABILITY_PNG)


def _curves_from_history(run_dir: Path) -> bytes | None:
    """The training curves drawn from ``logs/history.csv`` when the report has no PNG of them."""
    import csv
    import tempfile

    history_csv = run_dir / "logs" / "history.csv"
    if not history_csv.is_file():
        return None
    from .report import plot_curves

    with open(history_csv, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    history = [{k: (float(v) if k not in ("phase",) and v not in ("", None) else v) for k, v in row.items()} for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        plot_curves(history, Path(tmp) / CURVES_PNG)
        return (Path(tmp) / CURVES_PNG).read_bytes()


def add_bundle(sources: PageSources, bundle_report: Path, bundle_path: Path | str) -> PageSources:
    """The converter's side: the conversion report (``metrics.json``, ``reliability.png``) of the bundle at
    ``bundle_path`` (``bundle_report`` is its ``report/`` folder, or the folder convert is filling)."""
    bundle_report = Path(bundle_report)
    sources.bundle = _json(bundle_report / METRICS, "the conversion report; bundles made by "
                           "'edgeclass bundle create' have none")
    sources.bundle_reliability_png = _bytes(bundle_report / RELIABILITY_PNG)
    sources.bundle_path = str(Path(bundle_path).resolve())
    sources.files["bundle"] = str(Path(bundle_path).resolve() / "report" / METRICS)
    return sources
