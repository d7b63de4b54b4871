"""Start-up under systemd: what the service does before its first frame, with real processes and signals.

A camera absent at boot and a Pi with no bundle deployed yet are both waited
for: READY=1 with STATUS=waiting for ..., the watchdog fed, instead of
TimeoutStartSec killing the start or the start limit ending the unit
`failed`. A stop signal at any point of start-up ends the run cleanly (exit 0),
and SIGHUP means "reload" only where there is something to reload.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .service_process import (SHIPPED, read_state, service_factory, switch,  # noqa: F401
                              unit_settings, write_config)
from .tinymodel import COLOURS


def _seconds(value: str) -> float:
    """A systemd time span as this unit writes them: "30", "120s", "10min"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|)?", value.strip())
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def _shipped(section: str, key: str) -> float:
    from edgeclass.device.service.config import build, read_config_file

    return getattr(getattr(build(read_config_file(SHIPPED)), section), key)


def test_start_timeout_give_up_and_start_limit_agree_in_the_shipped_unit_and_config():
    """The numbers behind "a camera absent at boot is waited for, not restarted into `failed`".

    - The service says READY=1 as soon as it waits for a camera (next test), so
      TimeoutStartSec only has to cover loading the model and one stall of the
      first open, not give_up_after.
    - A camera absent for good ends the process after give_up_after, and systemd
      restarts it RestartSec later: fewer starts per StartLimitIntervalSec than
      StartLimitBurst, so the unit never ends `failed` for it.
    - A reload that hangs is given up (reload_timeout) before systemd gives up on
      the reload state (TimeoutStartSec).
    """
    unit = unit_settings()
    timeout_start = _seconds(unit["TimeoutStartSec"])
    interval, burst = _seconds(unit["StartLimitIntervalSec"]), int(unit["StartLimitBurst"])
    restart_sec = _seconds(unit["RestartSec"])
    give_up, stall = _shipped("source", "give_up_after"), _shipped("source", "stall_timeout")
    assert timeout_start >= stall + 60, "room to load a model on a slow Pi before the first open stalls"
    starts_per_interval = interval / (give_up + restart_sec) + 1  # the first start counts too
    assert starts_per_interval < burst, (starts_per_interval, burst)
    assert _shipped("service", "reload_timeout") < timeout_start
    # A real crash loop (a bad config) still stops: 5 starts RestartSec apart fit easily in the interval.
    assert burst * restart_sec < interval


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output is edgeclass's, not the camera's
        pass


class CameraLater:
    """A network camera that is not up yet: a TCP port that refuses connections until :meth:`power_on`.

    Then it serves the test video over HTTP, as an IP camera's HTTP stream
    would (to edgeclass a URL is a live source, read through FFmpeg).
    """

    def __init__(self, video: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        host, port = self.sock.getsockname()
        self.url = f"http://{host}:{port}/{video.name}"
        handler = functools.partial(_QuietHandler, directory=str(video.parent))
        self.server = http.server.ThreadingHTTPServer((host, port), handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = self.sock
        self._serving = False

    def power_on(self) -> None:
        self.server.server_activate()  # listen() on the port edgeclass keeps trying
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._serving = True

    def close(self) -> None:
        if self._serving:
            self.server.shutdown()
        self.server.server_close()


def test_camera_absent_at_boot_is_waited_for_with_ready_and_status(service_factory, colour_bundle, colour_video, tmp_path):
    """Fault: the unit sat in `activating` while the camera was retried, and TimeoutStartSec killed it.

    Now READY=1 comes at once with STATUS=waiting for camera, the watchdog is
    fed while the capture thread retries, and the camera is picked up when it
    comes up (an HTTP camera that boots after the Pi).
    """
    camera = CameraLater(colour_video)
    try:
        config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                              source={"source": camera.url, "stall_timeout": 0.5, "reopen_backoff_max": 0.5,
                                      "give_up_after": 60.0},
                              service={"state_file": "state.json", "state_interval": 0.2})
        svc = service_factory(["--config", config])
        ready = svc.wait_message("READY=1", timeout=20)
        ready_at = time.monotonic()
        assert not svc.results()
        status = svc.lines("STATUS=")[0]
        assert status.startswith("STATUS=waiting for camera: ") and camera.url in status, status
        assert "giving up after 60 s" in status
        svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= 4, timeout=10, what="watchdog pings while waiting")
        state = svc.wait_for(lambda: (s := read_state(tmp_path / "state.json")).get("status", "").startswith("waiting")
                             and s, what="the state file saying so")
        assert state["frames"] == 0 and camera.url in state["last_error"]
        # Longer than the watchdog's grace (stall 0.5 + backoff 0.5 + 5 s): every failed open of an absent
        # camera is the capture thread at work, so the pings go on; systemd would otherwise restart the
        # service every WatchdogSec and spend the start limit after all.
        time.sleep(max(0.0, 8.0 - (time.monotonic() - ready_at)))
        pings = len(svc.lines("WATCHDOG=1"))
        svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= pings + 3, timeout=5, what="pings after the grace")
        assert "stopping watchdog pings" not in svc.err.read_text() and svc.proc.poll() is None

        camera.power_on()
        svc.wait_for(svc.results, timeout=30, what="results once the camera is up")
        assert svc.results()[0]["label"] == "red"
        assert svc.lines().count("READY=1") == 1 and svc.lines().index("READY=1") == ready  # no second start-up
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0, svc.err.read_text()
    finally:
        camera.close()
    err = svc.err.read_text()
    assert "waiting for camera" in err and "Traceback" not in err


def test_camera_url_credentials_never_reach_status_or_state(service_factory, colour_bundle, tmp_path):
    """An RTSP camera that is down at boot: its password is in the config, and nowhere else."""
    camera = CameraLater(Path("stream"))  # never powered on: every open is refused at once
    try:
        url = camera.url.replace("http://", "rtsp://admin:hunter2@")
        config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                              source={"source": url, "stall_timeout": 0.5, "reopen_backoff_max": 0.5},
                              service={"state_file": "state.json", "state_interval": 0.2})
        svc = service_factory(["--config", config])
        svc.wait_message("READY=1", timeout=30)
        state = svc.wait_for(lambda: (s := read_state(tmp_path / "state.json")).get("last_error") and s,
                             what="the state file")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
    finally:
        camera.close()
    everything = "\n".join([*svc.lines(), (tmp_path / "state.json").read_text(), svc.err.read_text(),
                            svc.out.read_text()])
    assert "hunter2" not in everything and "admin" not in everything
    assert "rtsp://***@127.0.0.1" in state["source"] and "rtsp://***@127.0.0.1" in "\n".join(svc.lines("STATUS="))


def test_no_bundle_yet_waits_then_runs_the_first_deploy(service_factory, colour_bundle, colour_video, tmp_path):
    """Fault: with no bundle yet, `service install` + `systemctl start` ended `failed` (start limit).

    Now the service starts, says READY=1 and STATUS=waiting for a bundle, feeds
    the watchdog, and picks the bundle up when `current` appears (a deploy).
    A refused bundle is waited out the same way; SIGHUP makes it look again.
    """
    current, state_file = tmp_path / "current", tmp_path / "state.json"
    # A short watchdog grace (stall 0.5 + backoff 0.5 + 5 s): the wait below is longer, and must not count
    # against the frame loop once the bundle arrives.
    config = write_config(tmp_path / "device.toml", model={"bundle": "current"},
                          source={"source": str(colour_video), "loop": True, "realtime": True,
                                  "stall_timeout": 0.5, "reopen_backoff_max": 0.5},
                          service={"state_file": "state.json", "state_interval": 0.2})
    svc = service_factory(["--config", config])
    started = time.monotonic()
    svc.wait_message("READY=1", timeout=20)
    assert svc.lines("STATUS=")[0].startswith(f"STATUS=waiting for a bundle: {current}: no bundle there yet")
    svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= 4, timeout=10, what="watchdog pings while waiting")
    time.sleep(1.0)
    assert svc.proc.poll() is None and not svc.results()  # alive, not crash-looping
    state = read_state(state_file)
    assert state["status"].startswith("waiting for a bundle") and state["frames"] == 0 and state["bundle_name"] is None

    # A bundle that is refused: still waiting, the reason in the state file; SIGHUP looks again.
    broken = shutil.copytree(colour_bundle, tmp_path / "releases" / "broken")
    (broken / "model.tflite").write_bytes(b"not a model")
    switch(current, broken)
    svc.wait_for(lambda: "was refused" in svc.err.read_text(), timeout=10, what="the refusal")
    svc.wait_for(lambda: "sha256" in (read_state(state_file).get("last_error") or ""), what="last_error")
    refusals = svc.err.read_text().count("was refused")
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for(lambda: svc.err.read_text().count("was refused") > refusals, timeout=10, what="a second look")
    assert svc.proc.poll() is None and not svc.results()

    time.sleep(max(0.0, 7.0 - (time.monotonic() - started)))  # waited longer than the watchdog grace
    good = shutil.copytree(colour_bundle, tmp_path / "releases" / "v1")
    switch(current, good)  # what `edgeclass bundle install` does; no signal needed
    svc.wait_for(svc.results, timeout=20, what="results from the first bundle")
    pings = len(svc.lines("WATCHDOG=1"))
    svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= pings + 4, timeout=10, what="pings from the frame loop")
    assert "stopping watchdog pings" not in svc.err.read_text()
    assert svc.results()[0]["label"] in COLOURS
    svc.wait_for(lambda: read_state(state_file).get("bundle_path") == str(good.resolve()), what="the release in state")
    assert read_state(state_file)["last_error"] is None
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0, svc.err.read_text()
    assert "Traceback" not in svc.err.read_text()


def test_a_long_wait_for_a_bundle_does_not_starve_the_watchdog_afterwards(service_factory, colour_bundle, tmp_path):
    """A fresh Pi at first boot: no bundle yet and no camera yet. The bundle arrives after longer than the
    watchdog's grace; the frame loop that starts then, still waiting for the camera, keeps pinging."""
    camera = CameraLater(Path("stream"))  # never comes up
    try:
        config = write_config(tmp_path / "device.toml", model={"bundle": "current"},
                              source={"source": camera.url, "stall_timeout": 0.5, "reopen_backoff_max": 0.5},
                              service={"state_file": "state.json"})
        svc = service_factory(["--config", config])
        svc.wait_message("READY=1", timeout=20)
        time.sleep(7.0)  # longer than the grace: stall 0.5 + backoff 0.5 + 5 s
        switch(tmp_path / "current", colour_bundle)
        svc.wait_for(lambda: svc.lines("STATUS=waiting for camera"), timeout=20, what="the frame loop")
        pings = len(svc.lines("WATCHDOG=1"))
        svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= pings + 6, timeout=10, what="pings")
        assert "stopping watchdog pings" not in svc.err.read_text()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
    finally:
        camera.close()


def test_interactive_run_with_a_missing_bundle_still_fails_at_once(colour_video, tmp_path):
    from .cli_helpers import edgeclass

    result = edgeclass("run", "-b", tmp_path / "nope", "-s", colour_video, "--max-frames", "1", timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def _sigterm_ends_it_cleanly(svc, *, told_systemd: bool = True) -> None:
    """What `systemctl stop` expects: exit 0 within seconds, no error line; STOPPING=1 once READY=1 was sent."""
    sent = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0, svc.err.read_text()
    assert time.monotonic() - sent < 8.0  # well inside TimeoutStopSec (90 s); slack for a loaded machine
    err = svc.err.read_text()
    assert "stopped by SIGTERM before the first frame" in err and "error:" not in err
    if told_systemd:
        assert svc.lines()[-1] == "STOPPING=1"


@pytest.mark.parametrize("waiting_for", ["camera", "bundle"])
def test_sigterm_before_the_first_frame_exits_0_promptly(service_factory, colour_bundle, colour_video, tmp_path,
                                                          waiting_for):
    """Fault: a stop before the first frame ended in "error: no frames were classified", exit 2."""
    if waiting_for == "camera":
        model, source = {"bundle": str(colour_bundle)}, {"source": "/dev/video97", "stall_timeout": 0.5}
    else:
        model, source = {"bundle": "current"}, {"source": str(colour_video)}
    config = write_config(tmp_path / "device.toml", model=model, source=source, service={"state_file": "state.json"})
    svc = service_factory(["--config", config])
    svc.wait_message("READY=1", timeout=20)
    assert svc.lines("STATUS=")[0].startswith(f"STATUS=waiting for a {waiting_for}" if waiting_for == "bundle"
                                              else "STATUS=waiting for camera")
    _sigterm_ends_it_cleanly(svc)


def test_sigterm_during_start_up_exits_0_promptly(service_factory, tmp_path):
    """Start-up stuck in a read (here the config file is a FIFO nobody writes): SIGTERM still ends it, exit 0.

    Without handlers installed before loading, SIGTERM killed the process (-15).
    """
    config = tmp_path / "device.toml"
    os.mkfifo(config)
    svc = service_factory(["--config", config])
    svc.wait_for(lambda: _blocked_in_fifo_open(svc.proc.pid), timeout=30, what="the process to block on the config")
    _sigterm_ends_it_cleanly(svc, told_systemd=False)  # still starting: nothing to tell systemd yet


def _blocked_in_fifo_open(pid: int) -> bool:
    """Whether the process sleeps in the kernel waiting for a FIFO's other end (Linux: /proc/PID/wchan)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner"
    except OSError:
        return False


def _interactive(args, tmp_path: Path, *, ignore_hup: bool = False, env: dict | None = None) -> subprocess.Popen:
    """``edgeclass run`` as typed in a terminal: no NOTIFY_SOCKET, no JOURNAL_STREAM."""
    clean = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}

    def child_setup() -> None:
        # What `nohup` does before exec; otherwise the default a terminal's shell gives, whatever this test
        # runner inherited (under `nohup pytest` SIGHUP arrives ignored, and edgeclass keeps an ignored hang-up).
        signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=(tmp_path / "stderr.txt").open("w"), text=True,
                            env={**clean, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=tmp_path,
                            preexec_fn=child_setup)


def test_terminal_hangup_stops_an_interactive_run(colour_bundle, colour_video, tmp_path):
    """Fault: SIGHUP always meant "reload", so closing the terminal left the run going."""
    proc = _interactive(["-b", colour_bundle, "-s", colour_video, "--loop", "--realtime", "-f", "jsonl"], tmp_path)
    try:
        assert proc.stdout.readline().startswith("{")
        # Keep reading, as a terminal would.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(30) == 0
        assert time.monotonic() - sent < 8.0  # well inside TimeoutStopSec (90 s); slack for a loaded machine
    finally:
        proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert "the terminal hung up, stopping" in err and "reloading" not in err


def test_nohup_keeps_an_interactive_run_going_through_a_hangup(colour_bundle, colour_video, tmp_path):
    proc = _interactive(["-b", colour_bundle, "-s", colour_video, "--loop", "--realtime", "-f", "jsonl"], tmp_path,
                        ignore_hup=True)
    try:
        assert proc.stdout.readline().startswith("{")
        proc.send_signal(signal.SIGHUP)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout.readline() for _ in range(5)), daemon=True)
        reader.start()
        reader.join(10)
        assert proc.poll() is None and len(lines) == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()


def test_sighup_reloads_with_a_config_outside_systemd(colour_bundle, colour_video, tmp_path):
    config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)},
                          source={"source": str(colour_video), "loop": True, "realtime": True},
                          output={"emit": "all"}, service={"state_file": "state.json"})
    proc = _interactive(["--config", config], tmp_path)
    try:
        assert proc.stdout.readline().startswith("{")
        proc.send_signal(signal.SIGHUP)
        err = tmp_path / "stderr.txt"
        deadline = time.monotonic() + 20
        while "reloaded: running bundle" not in err.read_text() and time.monotonic() < deadline:
            proc.stdout.readline()
        assert "reloaded: running bundle" in err.read_text() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
