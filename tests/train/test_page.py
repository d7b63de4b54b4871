"""The run's one page (report/index.html) in Debian's headless Chromium: self-contained, and every number from a file.

``EDGECLASS_REPORT_PAGE=PATH`` checks an existing page too (for example a
real flowers run's), and ``EDGECLASS_SCREENSHOTS=DIR`` keeps the screenshots
(the top of the page, and the worst errors with their heatmaps).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ..device.cdp import chromium, chromium_path  # noqa: E402
from .conftest import invoke  # noqa: E402
from .page_check import COLLECT, check_numbers  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium)")]


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory) -> tuple[Path, Path]:
    """(training directory, bundle): the tiny run converted with a temperature folded in, then its page rebuilt."""
    _, out, _ = trained
    bundle = tmp_path_factory.mktemp("page") / "bundle"
    result = invoke("convert", out, "-o", bundle, "--temperature", "on", "--calibration-size", "30")
    assert result.exit_code == 0, (result.output, result.exception)
    result = invoke("report", out, "--bundle", bundle)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"page: {out / 'report' / 'index.html'}" in result.output
    return out, bundle


def _png(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG"
    return image


def _screenshots(page, name: str, folder: Path | None) -> dict[str, np.ndarray]:
    """The top of the page and its worst-errors section (the correct answers when there are no errors)."""
    shots = {"top": page.screenshot()}
    section = "errors" if page.evaluate("document.querySelectorAll('#errors figure').length > 0") else "correct"
    page.evaluate(f"document.getElementById('{section}').scrollIntoView()")
    shots["errors"] = page.screenshot()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for key, data in shots.items():
            (folder / f"{name}-{key}.png").write_bytes(data)
    return {key: _png(data) for key, data in shots.items()}


def _load_and_check(page_path: Path, expected_files: dict[str, Path], screenshots: Path | None, name: str):
    with chromium(1280, 900) as page:
        page.open(page_path.resolve().as_uri())
        collected = page.evaluate(COLLECT)
        checked = check_numbers(collected, expected_files)
        accuracy = page.evaluate("document.getElementById('accuracy').textContent")
        heat = page.evaluate("[...document.querySelectorAll('#errors img, #correct img')].map(i => i.naturalWidth)")
        figures = page.evaluate("[...document.querySelectorAll('img.figure')].map(i => i.naturalWidth)")
        shots = _screenshots(page, name, screenshots)
        outside = [r for r in page.requests if not r.startswith("data:") and r != page_path.resolve().as_uri()]
    assert outside == []  # the page asked for nothing but itself: images are inline, there is no script or font
    return collected, checked, accuracy, heat, figures, shots


def test_page_loads_alone_and_every_number_is_from_the_files(converted, tmp_path):
    out, bundle = converted
    page_path = out / "report" / "index.html"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    converted_metrics = json.loads((bundle / "report" / "metrics.json").read_text())
    folder = Path(os.environ["EDGECLASS_SCREENSHOTS"]) if os.environ.get("EDGECLASS_SCREENSHOTS") else tmp_path
    files = {"metrics": out / "report" / "metrics.json", "bundle": bundle.resolve() / "report" / "metrics.json",
             "gradcam": out / "report" / "gradcam" / "gradcam.json", "config": out / "config.json"}
    collected, checked, accuracy, heat, figures, shots = _load_and_check(page_path, files, folder, "tiny")

    assert accuracy == f"{100 * metrics['accuracy']:.2f}%"
    sources = {src.partition(":")[0] for src, _, _ in collected["nums"]}
    assert sources == {"metrics", "bundle", "gradcam"} and checked > 100
    shown = {src for src, _, _ in collected["nums"]}
    # The page shows the float and int8 confusion matrices, per-class rows, and the calibration before and after.
    cm = converted_metrics["confusion_matrices"]
    assert {f"bundle:/confusion_matrices/{m}/{t}/{p}" for m in ("float", "int8") for t in range(3) for p in range(3)} <= shown
    assert all(v == cm["int8"][t][p] for t, row in enumerate(cm["int8"]) for p, v in enumerate(row))
    assert "bundle:/calibration/temperature" in shown and "bundle:/calibration/splits/test/int8_before/ece" in shown
    assert "bundle:/calibration/splits/test/int8/ece" in shown and "metrics:/calibration/ece" in shown
    assert {f"metrics:/per_class/{label}/f1" for label in metrics["labels"]} <= shown
    assert heat and min(heat) > 0 and len(figures) >= 3 and min(figures) > 0  # heatmaps, curves, reliability
    assert shots["top"].std() > 20 and shots["errors"].std() > 20

    # The check is real: a page whose figure differs from its file is caught.
    tampered = tmp_path / "tampered.json"
    shutil.copy(out / "report" / "metrics.json", tampered)
    data = json.loads(tampered.read_text())
    data["accuracy"] = round(data["accuracy"] - 0.1, 4)
    tampered.write_text(json.dumps(data))
    collected["files"]["metrics"] = str(tampered)
    with pytest.raises(AssertionError):
        check_numbers(collected, {})


@pytest.mark.skipif(not os.environ.get("EDGECLASS_REPORT_PAGE"), reason="set EDGECLASS_REPORT_PAGE to check a real run's page")
def test_a_real_runs_page(tmp_path):
    page_path = Path(os.environ["EDGECLASS_REPORT_PAGE"])
    folder = Path(os.environ["EDGECLASS_SCREENSHOTS"]) if os.environ.get("EDGECLASS_SCREENSHOTS") else tmp_path
    collected, checked, accuracy, heat, _, shots = _load_and_check(page_path, {}, folder, "report")
    metrics = json.loads(Path(collected["files"]["metrics"]).read_text())
    assert accuracy == f"{100 * metrics['accuracy']:.2f}%" and checked > 100
    assert heat and min(heat) > 0
    # The worst errors are drawn with their heatmaps: JET red where the evidence was.
    errors = shots["errors"]
    red = (errors[:, :, 2] > 180) & (errors[:, :, 1] < 90) & (errors[:, :, 0] < 90)
    assert red.sum() > 500


def test_report_command_refusals_and_open(trained, tmp_path, monkeypatch):
    _, out, _ = trained
    result = invoke("report", tmp_path / "missing")
    assert result.exit_code != 0 and "not a directory" in str(result.exception)
    result = invoke("report", tmp_path)
    assert result.exit_code != 0 and "metrics.json: missing" in str(result.exception)
    result = invoke("report", out, "--bundle", tmp_path)
    assert result.exit_code != 0 and "bundles made by 'edgeclass bundle create' have no conversion report" in str(result.exception)
    # --open hands the page to the user's browser ($BROWSER, as Python's webbrowser module reads it).
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {tmp_path / 'opened'}\n")
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None)  # read $BROWSER afresh
    result = invoke("report", out, "-o", tmp_path / "page.html", "--open")
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "opened").read_text().strip() == (tmp_path / "page.html").resolve().as_uri()
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
