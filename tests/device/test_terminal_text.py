"""Text from a bundle (its labels, its name) never reaches a terminal with control codes in it.

A bundle is data made by someone else: labels like "\\x1b[2J" (clear the
screen), "\\x1b]0;...\\x07" (retitle the window) or "\\r" (overwrite the line)
must print as harmless '?' in every human-readable output: ``predict``,
``bundle info``, ``run --format human``, ``service status``, STATUS= and error lines.
"""

from __future__ import annotations

import json

import cv2
import pytest

from edgeclass.device.pipeline.wrap import create_bundle_from_model

from ..conftest import run_edgeclass
from .conftest import colour_frame
from .tinymodel import write_colour_classifier

HOSTILE = ["\x1b[2J\x1b[31mred", "green\x08\x08\x08\x08\x08FAKE", "\x1b]0;owned\x07blue\x9b1m"]
CONTROL = [chr(c) for c in (*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0))]  # all but \n and \t


@pytest.fixture(scope="module")
def hostile_bundle(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    model, _ = write_colour_classifier(work)
    labels = work / "labels.txt"
    labels.write_text("\n".join(HOSTILE) + "\n", encoding="utf-8")
    return create_bundle_from_model(model, labels, work / "bundle", name="evil\x1b[5mbundle")


def _clean(text: str, where: str) -> None:
    found = sorted({hex(ord(c)) for c in text if c in CONTROL})
    assert not found, f"{where} prints control characters {found}"


def test_predict_human_output_sanitises_labels(hostile_bundle, tmp_path):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), cv2.cvtColor(colour_frame("red"), cv2.COLOR_RGB2BGR))
    result = run_edgeclass("predict", "-b", hostile_bundle, image)
    assert result.returncode == 0, result.stderr
    _clean(result.stdout + result.stderr, "predict")
    assert ": ?[2J?[31mred 0.99" in result.stdout  # still readable
    as_json = run_edgeclass("predict", "-b", hostile_bundle, image, "--json")
    _clean(as_json.stdout, "predict --json")
    assert json.loads(as_json.stdout)["label"] == HOSTILE[0]  # JSON keeps the exact label, escaped


def test_bundle_info_sanitises_the_name_and_labels(hostile_bundle):
    result = run_edgeclass("bundle", "info", hostile_bundle, "--verify")
    assert result.returncode == 0, result.stderr
    _clean(result.stdout + result.stderr, "bundle info")
    assert "evil?[5mbundle" in result.stdout and "green?????FAKE" in result.stdout


def test_run_human_output_sanitises_labels(hostile_bundle, colour_video):
    result = run_edgeclass("run", "-b", hostile_bundle, "-s", colour_video, "--max-frames", "5")
    assert result.returncode == 0, result.stderr
    _clean(result.stdout + result.stderr, "run --format human")


def test_service_status_and_systemd_status_sanitise_labels(tmp_path):
    from edgeclass.device.service import systemd

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"pid": 1, "started_at": 0, "updated_at": 1, "fps": 3.0, "frames": 9,
                                 "label": HOSTILE[2], "bundle_name": "evil\x1b[5mbundle", "bundle_path": "/x",
                                 "last_error": None}))
    result = run_edgeclass("service", "status", "--state-file", state, "--max-age", "1e9")
    _clean(result.stdout + result.stderr, "service status")
    assert "label ?]0;owned?blue?1m" in result.stdout
    line = systemd._status_line(f"3.0 fps, {HOSTILE[1]} (0.99), bundle evil\x1b[5mbundle")
    _clean(line, "STATUS=")


def test_error_lines_sanitise_quoted_file_contents(tmp_path):
    """A config file whose section name carries an escape (TOML allows \\u001b in quoted keys)."""
    config = tmp_path / "device.toml"
    config.write_text('["evil\\u001b[2J"]\nx = 1\n', encoding="utf-8")
    result = run_edgeclass("run", "--config", config)
    assert result.returncode == 2 and "unknown section [evil?[2J]" in result.stderr
    _clean(result.stderr, "the error line")
