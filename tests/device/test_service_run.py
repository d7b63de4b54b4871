"""`edgeclass run --config` as systemd runs it: a real child process, a real notify socket, real signals.

The test plays systemd (:class:`~tests.device.service_process.Service`): it
binds the AF_UNIX datagram socket named by NOTIFY_SOCKET, sets WATCHDOG_USEC,
sends SIGHUP/SIGTERM, and reads the state file. Faults are real: a bundle
switched through the ``current`` symlink, a garbage model, a named pipe whose
writer stops.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from edgeclass.device.bundle import sha256_file

from .cli_helpers import edgeclass
from .service_process import (FRENCH, french_bundle, read_state, service_factory, shipped_config,  # noqa: F401
                              stalling_fifo, switch, unit_settings, write_config)
from .tinymodel import COLOURS


def test_the_unit_command_under_a_stand_in_systemd(service_factory, colour_bundle, colour_video, tmp_path):
    """ExecStart and ExecReload from systemd/edgeclass.service, the shipped config, a notify socket, a watchdog.

    READY=1 arrives after the first result, then WATCHDOG=1 pings and STATUS= lines; ExecReload
    (kill -HUP) gives RELOADING=1 then READY=1; SIGTERM gives STOPPING=1 and a clean exit in 2 s.
    The looping, real-time video stands in for the camera (--loop --realtime added to ExecStart).
    """
    unit = unit_settings()
    assert unit["Type"] == "notify" and float(unit["WatchdogSec"]) >= 10
    argv = shlex.split(unit["ExecStart"])
    assert Path(argv[0]).name == "edgeclass" and argv[1:] == ["run", "--config", "/etc/edgeclass/device.toml"]
    config = shipped_config(tmp_path, colour_bundle, colour_video)
    svc = service_factory([*argv[2:3], config, "--loop", "--realtime"])
    ready = svc.wait_message("READY=1")
    ready_at = svc.messages[ready][0]
    first = svc.wait_for(svc.results, what="a result")[0]
    assert first["event"] == "change" and first["label"] == "red"  # the shipped config emits changes (jsonl)
    assert first["ts"] <= ready_at + 0.001  # the first result was out (classified and emitted) before READY=1
    svc.wait_for(lambda: len(svc.lines("WATCHDOG=1")) >= 3, timeout=20, what="3 watchdog pings")  # every 0.5 s
    svc.wait_for(lambda: any(" fps, " in line for line in svc.lines("STATUS=")), timeout=20, what="a STATUS with fps")
    status = [line for line in svc.lines("STATUS=") if " fps, " in line][-1]
    assert any(colour in status for colour in COLOURS) and "bundle bundle" in status
    state = svc.wait_for(lambda: (s := read_state(tmp_path / "state.json")).get("frames") and s, what="state")
    assert state["pid"] == svc.proc.pid and state["bundle_path"] == str(colour_bundle.resolve())
    assert state["label"] in COLOURS and state["last_error"] is None
    # What runs, where, on what: the keys `service status` and deploy's health check read.
    assert (state["model"], state["backend"], state["interpreter"], state["edgetpu_setting"]) == (
        "model.tflite", "cpu", "ai_edge_litert", "auto")
    assert state["resolution"] == "160x120" and str(colour_video) in state["source"]
    assert isinstance(state["dropped"], int) and state["reopens"] == 0 and state["frames"] > 0
    status = edgeclass("service", "status", "--state-file", tmp_path / "state.json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "  model model.tflite on the CPU (ai_edge_litert); edgetpu = auto\n" in status.stdout
    assert f"  source {state['source']} at 160x120\n" in status.stdout
    assert " reopens\n" in status.stdout and " dropped, " in status.stdout

    reload_cmd = unit["ExecReload"].replace("$MAINPID", str(svc.proc.pid))
    mark = len(svc.lines())
    subprocess.run(shlex.split(reload_cmd), check=True, timeout=10)
    reloaded = svc.wait_message("READY=1", after=svc.wait_message("RELOADING=1", after=mark))
    assert "reloaded: running bundle" in svc.err.read_text()

    sent = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0, svc.err.read_text()
    assert time.monotonic() - sent < 2.0
    svc.wait_message("STOPPING=1", after=reloaded, timeout=5)
    order = [line for line in svc.lines() if line in ("READY=1", "WATCHDOG=1", "STOPPING=1", "RELOADING=1")]
    assert order[0] == "READY=1" and order[1] == "WATCHDOG=1" and order[-1] == "STOPPING=1"
    assert order.count("READY=1") == 2 and order.count("RELOADING=1") == 1


def test_sighup_swaps_bundles_through_current_and_keeps_the_old_one_on_garbage(
        service_factory, colour_bundle, french_bundle, colour_video, tmp_path):
    releases = tmp_path / "releases"
    v1 = shutil.copytree(colour_bundle, releases / "v1")
    v2 = shutil.copytree(french_bundle, releases / "v2")
    bad = shutil.copytree(colour_bundle, releases / "bad")
    garbage = bad / "model.tflite.new"
    garbage.write_bytes(os.urandom(4096))
    os.replace(garbage, bad / "model.tflite")  # a new file, as a copy tool writes it: hashes no longer match
    current = tmp_path / "current"
    switch(current, v1)
    state_file = tmp_path / "state.json"
    config = write_config(tmp_path / "device.toml", model={"bundle": "current"}, source={"source": str(colour_video)},
                     output={"emit": "all", "stats_interval": 0},
                     service={"state_file": "state.json", "state_interval": 0.2})
    svc = service_factory(["--config", config, "--loop", "--realtime"])
    svc.wait_message("READY=1")
    svc.wait_for(lambda: read_state(state_file).get("bundle_path") == str(v1.resolve()), what="v1 in the state file")

    # 1. garbage (hash mismatch): refused, logged once, v1 keeps classifying.
    switch(current, bad)
    mark = len(svc.lines())
    svc.proc.send_signal(signal.SIGHUP)
    reloading = svc.wait_message("RELOADING=1", after=mark)
    assert svc.lines()[reloading + 1].startswith("MONOTONIC_USEC=")
    svc.wait_message("READY=1", after=reloading)
    seen = len(svc.results())
    svc.wait_for(lambda: len(svc.results()) > seen + 10, what="results after the refused reload")
    assert {r["label"] for r in svc.results()[seen:]} <= set(COLOURS)
    failures = [line for line in svc.err.read_text().splitlines() if "reload failed" in line]
    assert len(failures) == 1 and "bad/model.tflite: sha256 is" in failures[0] and str(v1.resolve()) in failures[0]
    assert any(line.startswith("STATUS=reload failed") for line in svc.lines()[reloading:])
    state = svc.wait_for(lambda: (s := read_state(state_file)).get("last_error") and s, what="last_error in state")
    assert state["bundle_path"] == str(v1.resolve()) and "reload failed" in state["last_error"]

    # 2. a different valid bundle (other input size and labels): swapped in without a restart.
    switch(current, v2)
    mark = len(svc.lines())
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_message("READY=1", after=svc.wait_message("RELOADING=1", after=mark))
    svc.wait_for(lambda: any(r["label"] in FRENCH.values() for r in svc.results()), what="v2 results")
    svc.wait_for(lambda: read_state(state_file).get("bundle_path") == str(v2.resolve()), what="v2 in the state file")
    assert read_state(state_file)["last_error"] is None
    svc.wait_for(lambda: len(svc.results()) > 10 + next(i for i, r in enumerate(svc.results()) if r["label"] in FRENCH.values()),
                 what="10 more results")
    labels = [r["label"] for r in svc.results()]
    first_v2 = next(i for i, label in enumerate(labels) if label in FRENCH.values())
    assert set(labels[:first_v2]) <= set(COLOURS) and set(labels[first_v2:]) <= set(FRENCH.values())  # one clean switch
    assert svc.proc.poll() is None
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0
    assert len([line for line in svc.err.read_text().splitlines() if "reload failed" in line]) == 1


def test_model_garbage_that_passes_the_hash_check_is_refused_by_the_interpreter(
        service_factory, colour_bundle, colour_video, tmp_path):
    """The manifest re-hashed over a garbage model: only loading and a test inference can catch it."""
    bundle = shutil.copytree(colour_bundle, tmp_path / "b")
    svc = service_factory(["-b", bundle, "-s", colour_video, "--loop", "--realtime", "-f", "jsonl"])
    svc.wait_message("READY=1")
    new = bundle / ".model.tmp"
    new.write_bytes(b"TFL3" + os.urandom(2000))
    os.replace(new, bundle / "model.tflite")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"]["model.tflite"] = sha256_file(bundle / "model.tflite")
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for(lambda: "reload failed" in svc.err.read_text(), what="the reload error")
    seen = len(svc.results())
    svc.wait_for(lambda: len(svc.results()) > seen + 5, what="results after the failed reload")
    assert svc.results()[-1]["label"] in COLOURS
    err = svc.err.read_text()
    assert err.count("reload failed") == 1 and "not a usable TFLite model" in err
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0


def test_source_that_stops_delivering_is_reopened_then_the_process_gives_up(service_factory, colour_video, colour_bundle, tmp_path):
    fifo, fds = stalling_fifo(tmp_path, colour_video)
    try:
        svc = service_factory(["-b", colour_bundle, "-s", fifo, "-f", "jsonl", "--loop",
                               "--stall-timeout", "0.5", "--give-up-after", "3"])
        svc.wait_message("READY=1")
        assert svc.proc.wait(30) == 2
    finally:
        for fd in fds:
            os.close(fd)
    err = svc.err.read_text()
    assert "no frame for" in err and "reopening in" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "giving up" in last and "camera.fifo" in last
    assert svc.results() and "Traceback" not in err
    # While the grabber was recovering the watchdog was fed; the give-up ended it, not systemd.
    assert len(svc.lines("WATCHDOG=1")) >= 3
    assert any(line.startswith("STATUS=failed: ") for line in svc.lines())


def test_hung_source_stops_the_watchdog_pings(service_factory, colour_video, colour_bundle, tmp_path):
    """Every reader the grabber starts blocks in the driver: no frames, no progress, so no pings.

    Recovery attempts stop once MAX_ABANDONED readers are stuck; the liveness
    grace (stall 0.5 + backoff 0.5 + 5 s) then runs out long before the give-up
    (60 s), so under systemd the watchdog would restart the service.
    """
    fifo, fds = stalling_fifo(tmp_path, colour_video)
    config = write_config(tmp_path / "device.toml", model={"bundle": str(colour_bundle)}, source={
        "source": str(fifo), "stall_timeout": 0.5, "reopen_backoff_max": 0.5, "give_up_after": 60.0},
        service={"state_file": "state.json"})
    try:
        svc = service_factory(["--config", config])
        svc.wait_message("READY=1")
        svc.wait_for(lambda: "stopping watchdog pings" in svc.err.read_text(), timeout=40, what="the pings to stop")
        pings = len(svc.lines("WATCHDOG=1"))
        time.sleep(1.5)  # three ping intervals
        assert len(svc.lines("WATCHDOG=1")) == pings and svc.proc.poll() is None
        assert any("no frames:" in line for line in svc.lines("STATUS="))
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(10) == 0
    finally:
        for fd in fds:
            os.close(fd)
