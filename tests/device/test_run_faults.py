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
from .service_process import read_state, service_factory, stalling_fifo, write_config  # noqa: F401 (a fixture)


def _edgeclass_popen(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, cwd=cwd)


# -- cameras at boot ------------------------------------------------------------


@pytest.mark.parametrize("how", ["--wait-for-source", "--config"])
def test_source_link_absent_at_start_is_waited_for(colour_bundle, colour_video, tmp_path, how):
    """A by-id style symlink made after the run started and retried it: waited for, then every frame classified."""
    link = tmp_path / "v4l" / "by-id" / "usb-Test_Camera_0001-video-index0"
    if how == "--config":
        args = ["--config", write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                                    source={"source": str(link)}, output={"emit": "all"},
                                    service={"state_file": "state.json"})]
    else:
        args = ["-b", colour_bundle, "-s", link, "--wait-for-source", "-f", "jsonl"]
    proc = _edgeclass_popen(args, tmp_path)
    # The camera appears only once the run has tried it and said it will retry (however slow its start-up).
    err_lines = []
    for line in proc.stderr:
        err_lines.append(line)
        if "reopening in" in line:
            break
    assert proc.poll() is None, "".join(err_lines)
    link.parent.mkdir(parents=True)
    link.symlink_to(colour_video)
    out, rest = proc.communicate(timeout=60)
    err = "".join(err_lines) + rest
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
    fifo, fds = stalling_fifo(tmp_path, colour_video)
    config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)}, source={
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

    from .service_process import SHIPPED, unit_settings

    source = build(read_config_file(SHIPPED)).source
    grace = Liveness.for_options(source.stall_timeout, source.reopen_backoff_max, now=0).grace
    assert grace + float(unit_settings()["WatchdogSec"]) <= 75


# -- night: dark and blank pictures -------------------------------------------------


def test_dark_night_does_not_restart_the_service_by_default(service_factory, colour_bundle, tmp_path):
    """Under the service with a watchdog: a dark-but-noisy dusk, then hours of exact black (here 5 s,
    8x the give-up period): frames are skipped, the pings go on, nothing is reopened or given up."""
    from .mjpeg_camera import MJPEGCamera, noisy

    def night(i: int):
        return noisy(14, seed=i) if i < 15 else noisy(1, seed=0)  # noisy(1): all zeros

    with MJPEGCamera(night, fps=30) as camera:
        config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)}, source={
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
        assert read_state(tmp_path / "state.json").get("last_error") is None
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0


# -- camera credentials ---------------------------------------------------------------

SECRET = "s3cret-PW"


class RefusingRTSPCamera:
    """An RTSP server on 127.0.0.1 that answers every request '401 Unauthorized' and records the Authorization it got."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.authorizations: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn) -> None:
        data = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    head, data = data.split(b"\r\n\r\n", 1)
                    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
                    if "Authorization" in headers:
                        self.authorizations.append(headers["Authorization"])
                    conn.sendall(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {headers.get('CSeq', '1')}\r\n"
                                 'WWW-Authenticate: Basic realm="camera"\r\n\r\n'.encode())

    def close(self) -> None:
        self.sock.close()


def _no_secret_anywhere(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        assert SECRET not in text, f"the camera password is in {where}"
        assert "viewer:" not in text and "admin:" not in text, f"the camera user name is in {where}"


def test_camera_url_credentials_never_appear_in_logs_status_state_or_sidecars(service_factory, colour_bundle, tmp_path):
    """A camera that really demands HTTP basic auth, under the service: frames flow, and the password
    is nowhere in stdout, the log (with -v), STATUS=, state.json, the summary or the uncertain frames."""
    import base64

    from .mjpeg_camera import MJPEGCamera, noisy

    with MJPEGCamera(lambda i: noisy(255, seed=i), fps=30, auth=("viewer", SECRET)) as camera:
        uncertain = tmp_path / "uncertain"
        config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                         source={"source": camera.url}, output={"emit": "all", "stats_interval": 0.5},
                         service={"state_file": "state.json", "state_interval": 0.2},
                         uncertain={"dir": str(uncertain), "threshold": 0.99, "max_per_minute": 600})
        summary = tmp_path / "summary.json"
        svc = service_factory(["--config", config, "--summary-json", summary], options=("-v",))
        svc.wait_message("READY=1")
        svc.wait_for(lambda: len(list(uncertain.glob("*.json"))) >= 3, what="uncertain frames saved")
        svc.wait_for(lambda: read_state(tmp_path / "state.json").get("frames"), what="the state file")
        svc.wait_for(lambda: any(" fps, " in line for line in svc.lines("STATUS=")), what="a STATUS with fps")
        svc.proc.send_signal(signal.SIGHUP)  # a reload logs what is running now
        svc.wait_for(lambda: "reloaded" in svc.err.read_text(), what="the reload")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0, svc.err.read_text()
    assert camera.connections >= 1 and svc.results()  # the credentials were needed, and they worked
    sidecars = {str(p): p.read_text() for p in uncertain.glob("*.json")}
    assert all("stream http://***@127.0.0.1" in json.loads(t)["source"] for t in sidecars.values())
    _no_secret_anywhere({"stdout": svc.out.read_text(), "stderr": svc.err.read_text(),
                         "notify messages": "\n".join(svc.lines()), "state.json": (tmp_path / "state.json").read_text(),
                         "summary": summary.read_text(), **sidecars})
    assert base64.b64encode(f"viewer:{SECRET}".encode()).decode() not in svc.err.read_text()


def test_camera_url_credentials_never_appear_when_the_camera_refuses_them(colour_bundle, tmp_path):
    """An RTSP camera that refuses the password: retried, given up; every error names it as rtsp://***@."""
    camera = RefusingRTSPCamera()
    try:
        url = f"rtsp://admin:{SECRET}@127.0.0.1:{camera.port}/live"
        result = run_edgeclass("-v", "run", "-b", colour_bundle, "-s", url, "--wait-for-source",
                               "--give-up-after", "2", "--summary-json", tmp_path / "s.json")
    finally:
        camera.close()
    assert result.returncode == 2
    assert camera.authorizations  # FFmpeg really sent the credentials
    last = result.stderr.strip().splitlines()[-1]
    assert "giving up" in last and f"stream rtsp://***@127.0.0.1:{camera.port}/live" in last
    _no_secret_anywhere({"stdout": result.stdout, "stderr": result.stderr})


def test_camera_url_credentials_never_appear_in_config_errors(colour_bundle, tmp_path):
    config = tmp_path / "device.toml"
    url = f"rtsp://admin:{SECRET}@192.0.2.7/live"
    config.write_text(f'[model]\nbundle = "{colour_bundle}"\n[source]\nsource = "{url}"\nstall_timeout = "{url}"\n')
    result = run_edgeclass("run", "--config", config)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "device.toml:5: [source] stall_timeout = \"rtsp://***@192.0.2.7/live\" must be" in last
    _no_secret_anywhere({"stderr": result.stderr, "stdout": result.stdout})


# -- a full disk under the results file ----------------------------------------------

def test_a_full_disk_under_the_results_file_is_counted_and_the_run_goes_on(colour_bundle, colour_video, tmp_path):
    """/dev/full answers every write with ENOSPC, as a full SD card does: one warning, lost lines counted."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    state = tmp_path / "state.json"
    result = run_edgeclass("run", "-b", colour_bundle, "-s", colour_video, "-o", "/dev/full", "-f", "jsonl",
                           "--max-frames", "30", "--state-file", state)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cannot write results" in line]
    assert len(warnings) == 1 and "/dev/full" in warnings[0] and "No space left on device" in warnings[0], result.stderr
    assert "30 frames in" in result.stderr  # every frame was classified
    assert json.loads(state.read_text())["results_lost"] >= 1


# -- the wall clock jumps (NTP at boot on a Pi without a real-time clock) -------------

def test_latencies_ignore_a_wall_clock_that_jumps_back(colour_bundle, colour_video, monkeypatch):
    """A Pi has no RTC: NTP may set the clock back by hours mid-run. Latencies must not notice."""
    from edgeclass.device.bundle import load_bundle
    from edgeclass.device.pipeline.classifier import open_classifier
    from edgeclass.device.pipeline.config import SourceConfig
    from edgeclass.device.pipeline.loop import Output, RunLimits, Runner

    real_time = time.time
    seen: list = []

    class JumpingClock(Output):
        def write(self, frame, decision):
            seen.append(decision)
            if len(seen) == 5:  # from now on the wall clock is an hour behind
                monkeypatch.setattr(time, "time", lambda: real_time() - 3600)

    bundle = load_bundle(colour_bundle)
    runner = Runner(bundle, open_classifier(bundle), SourceConfig(source=str(colour_video)),
                    outputs=[JumpingClock()], limits=RunLimits(max_frames=20))
    summary = runner.run()
    assert summary["frames"] == 20 and len(seen) == 20
    assert seen[10].time < seen[0].time  # the jump really happened (decision times are wall-clock times)
    latencies = [d.latency_ms for d in seen]
    assert all(0 <= ms < 10_000 for ms in latencies), latencies
    assert 0 <= summary["latency_ms_p95"] < 10_000
