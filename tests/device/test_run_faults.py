"""`edgeclass run` against camera faults at boot and in the field, each in a real child process.

Real parts: symlinks that appear late, FIFOs whose writer stops, an HTTP
camera (multipart MJPEG, what IP cameras and ESP32-CAMs serve) that sends dark
or frozen pictures, a notify socket and ``WATCHDOG_USEC`` as systemd sets them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ..conftest import run_edgeclass
from .test_service_run import Service, _config, _stalling_fifo, _state


@pytest.fixture()
def service_factory(tmp_path):
    made: list[Service] = []

    def make(args, **kwargs) -> Service:
        made.append(Service(tmp_path, args, **kwargs))
        return made[-1]

    yield make
    for service in made:
        service.close()


def _edgeclass_popen(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, cwd=cwd)


# -- cameras at boot ------------------------------------------------------------


@pytest.mark.parametrize("how", ["--wait-for-source", "--config"])
def test_source_link_absent_at_start_is_waited_for(colour_bundle, colour_video, tmp_path, how):
    """A by-id style symlink made 1.5 s after start: waited for, then every frame classified."""
    link = tmp_path / "v4l" / "by-id" / "usb-Test_Camera_0001-video-index0"
    if how == "--config":
        args = ["--config", _config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                                    source={"source": str(link)}, output={"emit": "all"},
                                    service={"state_file": "state.json"})]
    else:
        args = ["-b", colour_bundle, "-s", link, "--wait-for-source", "-f", "jsonl"]
    proc = _edgeclass_popen(args, tmp_path)
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()[1]
    link.parent.mkdir(parents=True)
    link.symlink_to(colour_video)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    labels = [r["label"] for r in rows if r.get("event") != "stats"]
    assert labels == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    assert "usb-Test_Camera_0001-video-index0': no such file or folder" in err and "reopening in" in err


def test_source_link_absent_without_waiting_fails_at_once(colour_bundle, tmp_path):
    link = tmp_path / "usb-Test_Camera_0001-video-index0"
    start = time.monotonic()
    result = run_edgeclass("run", "-b", colour_bundle, "-s", link, "--max-frames", "1")
    assert result.returncode == 2 and "no such file or folder" in result.stderr.strip().splitlines()[-1]
    assert time.monotonic() - start < 20 and "reopening" not in result.stderr


def test_by_id_camera_absent_at_boot_is_retried_until_the_give_up(colour_bundle, tmp_path):
    """No camera can be plugged in here: the absent by-id path must be retried as a camera, then given up."""
    camera = "/dev/v4l/by-id/usb-Absent_Webcam_C270_0001-video-index0"
    start = time.monotonic()
    result = run_edgeclass("run", "-b", colour_bundle, "-s", camera, "--wait-for-source", "--give-up-after", "2")
    took = time.monotonic() - start
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert "giving up" in last and "usb-Absent_Webcam_C270_0001-video-index0: no such device" in last
    assert result.stderr.count("reopening in") >= 2  # retried, not refused
    assert took >= 2.0 and "Traceback" not in result.stderr
