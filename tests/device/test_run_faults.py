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


# -- the watchdog and a reader stuck in the driver ---------------------------------


def test_reader_stuck_holding_the_device_stops_the_watchdog_within_the_grace(
        service_factory, colour_video, colour_bundle, tmp_path):
    """The read blocks for good (a FIFO whose writer stops but never closes) and every reopen fails.

    The FIFO's name is removed once it is open, so the retries fail at once
    ("no such file"), as a V4L2 reopen fails with "busy" while the stuck reader
    holds the device. Failed attempts are not progress then: the pings must stop
    ``stall_timeout + reopen_backoff_max + 5 s`` after the last classified frame
    (6.5 s here), long before the give-up (120 s); systemd then restarts the
    service ``WatchdogSec`` later.
    """
    fifo, fds = _stalling_fifo(tmp_path, colour_video)
    config = _config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)}, source={
        "source": str(fifo), "stall_timeout": 0.5, "reopen_backoff_max": 1.0, "give_up_after": 120.0},
        output={"emit": "all"}, service={"state_file": "state.json"})
    grace = 0.5 + 1.0 + 5.0
    try:
        svc = service_factory(["--config", config], watchdog_usec=1_000_000)
        svc.wait_message("READY=1")
        fifo.unlink()  # the reader has it open; a new open cannot find it
        svc.wait_for(lambda: "stopping watchdog pings" in svc.err.read_text(), timeout=60, what="the pings to stop")
        time.sleep(2.0)  # four ping intervals: they stay stopped
        last_frame = max(r["ts"] for r in svc.results())
        with svc._lock:
            pings = [t for t, line in svc.messages if line == "WATCHDOG=1"]
        assert svc.proc.poll() is None  # not given up: under systemd the watchdog would now restart it
        err = svc.err.read_text()
        assert err.count("no such file or folder") >= 2  # it kept retrying meanwhile
        assert grace - 1.0 <= pings[-1] - last_frame <= grace + 2.0, (pings[-1] - last_frame, err)
        assert time.time() - pings[-1] >= 1.5  # and they stayed stopped
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
    finally:
        for fd in fds:
            os.close(fd)


def test_shipped_settings_restart_a_stuck_reader_within_about_a_minute():
    """grace (stall_timeout + reopen_backoff_max + 5 s) + WatchdogSec, from systemd/device.toml and the unit."""
    from edgeclass.device.service.config import build, read_config_file
    from edgeclass.device.service.supervise import Liveness

    from .test_service_run import SHIPPED, _unit_settings

    source = build(read_config_file(SHIPPED)).source
    grace = Liveness.for_options(source.stall_timeout, source.reopen_backoff_max, now=0).grace
    assert grace + float(_unit_settings()["WatchdogSec"]) <= 75


# -- night: dark and blank pictures -------------------------------------------------


def test_dark_night_does_not_restart_the_service_by_default(service_factory, colour_bundle, tmp_path):
    """Under the service with a watchdog: a dark-but-noisy dusk, then hours of exact black (here 5 s,
    8x the give-up period): frames are skipped, the pings go on, nothing is reopened or given up."""
    from .mjpeg_camera import MJPEGCamera, noisy

    def night(i: int):
        return noisy(14, seed=i) if i < 15 else noisy(1, seed=0)  # noisy(1): all zeros

    with MJPEGCamera(night, fps=30) as camera:
        config = _config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)}, source={
            "source": camera.url, "stall_timeout": 0.3, "reopen_backoff_max": 0.5, "give_up_after": 0.6,
            "frozen_after": 0.5}, output={"emit": "all"}, service={"state_file": "state.json", "state_interval": 0.2})
        svc = service_factory(["--config", config], watchdog_usec=1_000_000)
        svc.wait_message("READY=1")
        svc.wait_for(lambda: any("only blank frames" in line for line in svc.lines("STATUS=")), timeout=20,
                     what="STATUS naming the blank frames")
        time.sleep(5.0)
        with svc._lock:
            pings = [t for t, line in svc.messages if line == "WATCHDOG=1"]
        assert svc.proc.poll() is None, svc.err.read_text()
        assert time.time() - pings[-1] < 1.5  # still being pinged
        err = svc.err.read_text()
        assert "reopen" not in err and "giving up" not in err and "stopping watchdog" not in err
        assert 1 <= len(svc.results()) <= 15
        assert _state(tmp_path / "state.json").get("last_error") is None
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
