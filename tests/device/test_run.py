"""`edgeclass run` end to end: real videos and folders, real signals, the refusals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import run_edgeclass
from .test_predict import CORAL_EXPECTED


def _records(stdout: str, event: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [r for r in rows if event is None or r["event"] == event]


def test_every_frame_of_a_video_is_classified_in_order(colour_bundle, colour_video, tmp_path):
    summary = tmp_path / "summary.json"
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "-f", "jsonl", "--summary-json", summary)
    assert result.returncode == 0, result.stderr
    rows = _records(result.stdout)
    assert [r["frame"] for r in rows] == list(range(30))
    assert [r["label"] for r in rows] == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    assert [r["frame"] for r in rows if r["event"] == "change"] == [0, 10, 20]
    first = rows[0]
    assert set(first) >= {"time", "ts", "frame", "label", "score", "top_k", "latency_ms", "infer_ms"}
    assert first["latency_ms"] >= first["infer_ms"] > 0
    stats = json.loads(summary.read_text())
    assert stats["frames"] == 30 and stats["dropped"] == 0 and stats["fps"] > 0
    assert stats["latency_ms_p95"] >= stats["latency_ms_p50"] > 0


def test_changes_mode_emits_only_changes(colour_bundle, colour_video):
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "-f", "jsonl", "--emit", "changes", "--heartbeat", "60")
    assert result.returncode == 0, result.stderr
    assert [(r["event"], r["label"]) for r in _records(result.stdout)] == [("change", "red"), ("change", "green"), ("change", "blue")]


def test_max_frames_and_smoothing(colour_bundle, colour_video):
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "-f", "jsonl", "--max-frames", "14", "--smoothing", "0.9")
    assert result.returncode == 0, result.stderr
    labels = [r["label"] for r in _records(result.stdout)]
    assert len(labels) == 14
    # Heavy smoothing holds "red" for a few frames after the video turns green.
    assert labels[10] != "green" and labels[:10] == ["red"] * 10


def test_coral_images_through_the_live_loop(coral_bundle, shared_data, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in CORAL_EXPECTED:
        shutil.copy(shared_data / "coral" / "images" / name, folder / name)
    result = run_edgeclass("run", "-b", coral_bundle, "-s", folder, "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    # The folder is read sorted: bird, cat, grace_hopper.
    assert [r["label"] for r in _records(result.stdout)] == ["chickadee", "Egyptian cat", "military uniform"]


def test_human_format_and_stats_lines(colour_bundle, colour_video, tmp_path):
    out = tmp_path / "results.txt"
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "--loop", "--duration", "2", "--stats", "0.5", "-o", out)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert any(" red " in line for line in lines)
    stats = [line for line in lines if line.startswith("# ")]
    assert stats and " fps, latency p50 " in stats[0]


def test_sigterm_stops_cleanly(colour_bundle, colour_video):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeclass.device.cli", "run", "-b", str(colour_bundle), "-s", str(colour_video),
         "--loop", "-f", "jsonl", "--summary-json", "/dev/null"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert json.loads(first)["label"] == "red"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - sent < 8.0  # well inside TimeoutStopSec (90 s); slack for a loaded machine
    assert "received SIGTERM, stopping" in err
    assert all(json.loads(line) for line in out.splitlines())  # no half-written record


@pytest.mark.parametrize("source, expected", [
    ("97", "camera 97: cannot open"),
    ("/dev/video97", "camera /dev/video97: no such device"),
    ("README.md", "not a readable video"),
    ("no-such-thing.mp4", "no-such-thing.mp4"),
])
def test_unusable_sources_fail_fast_with_one_line(colour_bundle, tmp_path, source, expected):
    if source == "README.md":
        (tmp_path / "README.md").write_text("not a video")
    start = time.monotonic()
    result = run_edgeclass("run", "-b", colour_bundle, "-s", source, "--max-frames", "1", cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 20


def test_bad_options_are_refused(colour_bundle, colour_video):
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "--emit", "sometimes")
    assert result.returncode == 2 and "--emit is 'sometimes', expected one of all, changes" in result.stderr
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "--threshold", "2")
    assert result.returncode == 2 and "--threshold" in result.stderr
