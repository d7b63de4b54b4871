"""edgeclass under a real systemd (252, in the rehearsal container): notify, watchdog, stop, reload, waits, hardening.

Every test starts from an installed but stopped unit with no releases (see
``fresh``) and sets up what it needs the way a user would: ``device.toml``,
``bundle install`` as the service user, ``edgeclass deploy`` from here, and,
where a test must not take minutes, a drop-in in /run/systemd/system that
shortens one systemd timer (named in the test). The camera is a video file
(``[source] loop``/``realtime``), or a FIFO that stops delivering, or a file
that does not exist yet: the only stand-ins, because no camera exists here.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import REHEARSAL_VIDEO
from .container import PiContainer

EDGECLASS = "/opt/edgeclass/venv/bin/edgeclass"
ROOT = "/var/lib/edgeclass"
DROPIN = "/run/systemd/system/edgeclass.service.d/test.conf"
BUNDLE_ON_PI = "/srv/bundles/colours"


def write_config(pi: PiContainer, source: str = REHEARSAL_VIDEO, **extra: dict) -> None:
    """device.toml: the shipped defaults' [model], the rehearsal camera, and ``extra`` sections."""
    sections = {"source": {"source": source, "loop": True, "realtime": True, "stall_timeout": 2.0,
                           "reopen_backoff_max": 1.0}, "output": {"emit": "changes"}}
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()) + "\n"
                   for name, values in sections.items())
    pi.run(["tee", "/etc/edgeclass/device.toml"], input=text)


def drop_in(pi: PiContainer, text: str | None) -> None:
    """A runtime drop-in for the unit (None: remove it), then daemon-reload."""
    if text is None:
        pi.run(["rm", "-f", DROPIN])
    else:
        pi.run(["mkdir", "-p", str(Path(DROPIN).parent)])
        pi.run(["tee", DROPIN], input=f"[Service]\n{text}\n")
    pi.run(["systemctl", "daemon-reload"])


def install_release(pi: PiContainer) -> str:
    """``bundle install`` as the service user, the local half of a deploy; the new release's path."""
    out = pi.run(["sudo", "-u", "edgeclass", EDGECLASS, "bundle", "install", BUNDLE_ON_PI, "--root", ROOT,
                  "--json"]).stdout
    return json.loads(out.strip().splitlines()[-1])["release"]


def state(pi: PiContainer) -> dict:
    try:
        return json.loads(pi.run(["cat", "/run/edgeclass/state.json"], check=False).stdout)
    except json.JSONDecodeError:
        return {}


def runs_on(pi: PiContainer, release: str, timeout: float = 60) -> dict:
    def on_it():
        s = state(pi)
        return s if str(s.get("bundle_path", "")).rstrip("/") == release.rstrip("/") and s.get("frames", 0) else None
    return pi.wait_for(f"the service classifying with {release}", on_it, timeout=timeout)


def journal_json(pi: PiContainer, *args: str) -> list[dict]:
    return [json.loads(line) for line in pi.journal("-o", "json", *args).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pi(installed_pi, colour_bundle) -> PiContainer:
    installed_pi.run(["mkdir", "-p", "/srv/bundles"])
    subprocess.run(["cp", "-a", str(colour_bundle), str(installed_pi.root_path(BUNDLE_ON_PI))], check=True)
    return installed_pi


@pytest.fixture()
def fresh(pi):
    """Stopped, not failed, no drop-in, no releases, the rehearsal config; the journal position to read from."""
    pi.run(["systemctl", "stop", "edgeclass"], check=False)
    pi.run(["systemctl", "reset-failed", "edgeclass"], check=False)
    drop_in(pi, None)
    pi.sh(f"rm -rf {ROOT}/releases/* {ROOT}/current {ROOT}/previous /run/edgeclass/state.json")
    write_config(pi)
    cursor = pi.run(["journalctl", "--show-cursor", "-n", "0", "-q"], check=False).stdout.split("cursor: ")[-1].strip()
    yield cursor
    pi.run(["systemctl", "stop", "edgeclass"], check=False)


def since(cursor: str) -> tuple[str, ...]:
    return ("--after-cursor", cursor) if cursor else ()


# -- 1: no bundle yet -----------------------------------------------------------------------------


def test_no_bundle_yet_the_unit_waits_past_the_start_limit_then_runs_the_first_one(pi, fresh):
    """Fault 1: ``service install`` then ``systemctl start`` with no bundle ended ``failed`` within ~25 s."""
    started = pi.systemctl("start", "edgeclass")
    assert started.returncode == 0, f"systemctl start failed with no bundle: {started.stderr}"
    time.sleep(30)  # 5 restarts 5 s apart hit StartLimitBurst=5: the old behaviour was failed by now
    assert pi.active_state() == "active", pi.journal(*since(fresh))
    assert pi.unit_property("NRestarts") == "0"
    assert "waiting for a bundle" in pi.unit_property("StatusText")
    release = install_release(pi)
    runs_on(pi, release)
    assert pi.active_state() == "active" and pi.unit_property("NRestarts") == "0"


# -- 2 and 3: the first deploy ---------------------------------------------------------------------


def test_a_bundle_written_under_umask_077_is_world_readable_and_deploys(pi, fresh, colour_bundle, tmp_path):
    """Fault 2: a 0700 bundle kept its mode through scp and the service user could not read the upload."""
    modes = {p.relative_to(colour_bundle).as_posix() or ".": p.stat().st_mode & 0o777
             for p in [colour_bundle, *colour_bundle.rglob("*")]}
    assert all(mode == (0o755 if (colour_bundle / name).is_dir() else 0o644) for name, mode in modes.items()), modes
    result = deploy(pi, colour_bundle)
    assert result.returncode == 0, result.stdout + result.stderr
    release = json.loads(pi.run([EDGECLASS, "bundle", "releases", "--root", ROOT, "--json"]).stdout)["current"]
    runs_on(pi, release)
    assert "not readable" not in result.stderr


def test_first_deploy_starts_a_freshly_installed_unit(pi, fresh, colour_bundle):
    """Fault 3: the first deploy installed the release, then failed with 'edgeclass.service is not active, cannot reload'."""
    assert pi.active_state() == "inactive"
    result = deploy(pi, colour_bundle)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(first release)" in result.stdout and "was inactive: started it" in result.stdout, result.stdout
    assert pi.active_state() == "active"


def test_first_deploy_resets_and_starts_a_unit_failed_by_a_crash_loop(pi, fresh, colour_bundle):
    """Fault 3, the other way in: a config mistake ends the unit failed (start limit); deploy recovers it."""
    pi.run(["tee", "-a", "/etc/edgeclass/device.toml"], input="[decision]\nthreshold = 7\n")
    pi.systemctl("start", "edgeclass")
    pi.wait_for("the unit failed by its start limit", lambda: pi.active_state() == "failed" and "Start request "
                "repeated too quickly" in pi.journal(*since(fresh)), timeout=120, interval=1)
    write_config(pi)  # the user fixes the mistake, then deploys
    result = deploy(pi, colour_bundle)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "was failed: reset-failed, then started it" in result.stdout, result.stdout
    assert pi.active_state() == "active"


def deploy(pi: PiContainer, bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["edgeclass", "deploy", str(bundle), pi.host, *extra], env=pi.env(), capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


# -- 4: journal priorities --------------------------------------------------------------------------


def test_errors_and_warnings_reach_the_journal_at_their_priority(pi, fresh):
    """Fault 4: every line edgeclass logged reached the journal at priority 6 (info)."""
    pi.systemctl("start", "edgeclass", check=True)  # a warning: no bundle yet, waiting for one
    pi.wait_for("the wait for a bundle", lambda: "waiting for a bundle" in pi.unit_property("StatusText"))
    release = install_release(pi)
    runs_on(pi, release)
    pi.sh(f"printf 'damaged' >> {release}/model.tflite")  # an error: the reload is refused, the running one stays
    pi.systemctl("reload", "edgeclass", check=True)
    # The reload is prepared in the background and reads device.toml again: the config mistake
    # below must wait until the refusal of the damaged model is logged, or the reload sees it instead.
    pi.wait_for("the refused reload", lambda: any(
        "reload failed" in e.get("MESSAGE", "") and "model.tflite" in e.get("MESSAGE", "")
        for e in journal_json(pi, *since(fresh))), timeout=60)
    pi.run(["tee", "-a", "/etc/edgeclass/device.toml"], input="[decision]\nthreshold = 7\n")
    pi.systemctl("restart", "edgeclass")  # the CLI's one-line error: a config mistake
    pi.wait_for("the error line", lambda: any(
        e.get("MESSAGE", "").startswith("error:") for e in journal_json(pi, *since(fresh))), timeout=30)
    entries = [e for e in journal_json(pi, *since(fresh)) if e.get("SYSLOG_IDENTIFIER") == "edgeclass"]
    by_priority: dict[str, list[str]] = {}
    for entry in entries:
        by_priority.setdefault(entry["PRIORITY"], []).append(entry["MESSAGE"])
    seen = "\n".join(f"{p} {m[:160]}" for e in entries for p, m in [(e["PRIORITY"], e["MESSAGE"])])
    assert any(m.startswith("WARNING") and "waiting for a bundle" in m for m in by_priority.get("4", [])), seen
    assert any(m.startswith("ERROR") and "model.tflite" in m for m in by_priority.get("3", [])), seen
    assert any(m.startswith("error:") and "threshold" in m for m in by_priority.get("3", [])), seen
    assert not any(m.startswith(("error:", "ERROR", "WARNING")) for m in by_priority.get("6", [])), seen
    assert not any(m[:1] == "<" and m[1:2].isdigit() for m in map(lambda e: e["MESSAGE"], entries)), \
        "a priority prefix reached the journal as text"
    shown = pi.journal("-p", "warning", *since(fresh))
    assert "model.tflite" in shown and "threshold = 7" in shown, shown
    assert "received SIGHUP" not in shown, "journalctl -p warning shows info lines"


# -- 5: a camera absent at boot -----------------------------------------------------------------------


def test_a_camera_absent_at_start_is_waited_for_past_the_start_timeout(pi, fresh):
    """Fault 5: while the camera was retried the unit stayed 'activating', and TimeoutStartSec killed it.

    TimeoutStartSec is shortened to 10 s by a drop-in (the unit's 120 s would
    make this test take minutes); give_up_after stays at its 300 s default.
    The container has no /dev/video0, as a Pi whose camera is not plugged in.
    """
    write_config(pi, source="/dev/video0")
    drop_in(pi, "TimeoutStartSec=10s")
    release = install_release(pi)
    assert pi.systemctl("start", "edgeclass").returncode == 0
    time.sleep(20)
    assert pi.active_state() == "active", pi.journal(*since(fresh))
    assert pi.unit_property("NRestarts") == "0"
    status = pi.unit_property("StatusText")
    assert "waiting for camera" in status and "giving up after 300 s" in status, status
    assert state(pi).get("bundle_path") in (None, release), state(pi)  # nothing else runs meanwhile


# -- real systemd behaviour ------------------------------------------------------------------------------


def test_ready_only_after_the_first_classified_frame_and_status_in_systemctl_status(pi, fresh):
    release = install_release(pi)
    assert pi.systemctl("start", "edgeclass").returncode == 0  # returns at READY=1 (Type=notify)
    entries = journal_json(pi, *since(fresh))
    results = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "edgeclass" and e["MESSAGE"].startswith("{")]
    started = [e for e in entries if e.get("MESSAGE", "").startswith("Started edgeclass.service")]
    assert results and started, entries[-20:]
    first_result = json.loads(results[0]["MESSAGE"])
    assert first_result["label"] in ("red", "green", "blue"), first_result
    assert int(results[0]["__REALTIME_TIMESTAMP"]) <= int(started[0]["__REALTIME_TIMESTAMP"]), \
        "systemd saw READY=1 before the first frame was classified"
    runs_on(pi, release)
    time.sleep(6)  # STATUS= at most every 5 s
    status = pi.systemctl("status", "edgeclass").stdout
    line = next((x for x in status.splitlines() if x.strip().startswith("Status:")), "")
    assert "fps" in line and any(label in line for label in ("red", "green", "blue")), status


def test_watchdog_restarts_a_process_whose_frame_loop_hangs(pi, fresh, camera_video):
    """The camera is a FIFO that delivers part of a video and then nothing, its writer still open: a frozen driver.

    WatchdogSec is shortened to 10 s by a drop-in (the unit's 30 s works the same, slower).
    """
    fifo = "/srv/rehearsal/camera.fifo"
    pi.run(["rm", "-f", fifo])
    pi.run(["mkfifo", "-m", "0644", fifo])
    write_config(pi, source=fifo)
    drop_in(pi, "WatchdogSec=10s")
    release = install_release(pi)
    data = camera_video.read_bytes()
    writers = []

    def feed():
        fd = os.open(pi.root_path(fifo), os.O_WRONLY)  # blocks until the service opens the camera
        writers.append(fd)
        try:
            os.write(fd, data[: len(data) * 2 // 3])
        except OSError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        pi.systemctl("start", "--no-block", "edgeclass", check=True)
        runs_on(pi, release, timeout=60)
        pi.wait_for("a watchdog restart", lambda: int(pi.unit_property("NRestarts") or 0) >= 1, timeout=120,
                    interval=1)
    finally:
        for fd in writers:
            os.close(fd)
    log = pi.journal(*since(fresh))
    assert "Watchdog timeout" in log, log
    print("journal of the watchdog restart:\n" + "\n".join(
        line for line in log.splitlines() if "systemd[1]" in line or "watchdog" in line.lower()))


def test_systemctl_stop_ends_the_service_cleanly_within_2_s(pi, fresh):
    release = install_release(pi)
    pi.systemctl("start", "edgeclass", check=True)
    runs_on(pi, release)
    began = time.monotonic()
    pi.systemctl("stop", "edgeclass", check=True)
    took = time.monotonic() - began
    assert took < 2.0, f"systemctl stop took {took:.2f} s"
    assert pi.unit_property("Result") == "success"
    assert pi.unit_property("ExecMainStatus") == "0"
    log = pi.journal(*since(fresh))
    assert "SIGKILL" not in log and "timed out" not in log, log


def test_reload_applies_a_new_bundle_and_keeps_the_old_one_when_the_new_one_is_broken(pi, fresh):
    first = install_release(pi)
    pi.systemctl("start", "edgeclass", check=True)
    runs_on(pi, first)
    second = install_release(pi)
    pi.systemctl("reload", "edgeclass", check=True)
    runs_on(pi, second)
    third = install_release(pi)
    pi.sh(f"printf 'damaged' >> {third}/model.tflite")
    pi.systemctl("reload", "edgeclass", check=True)
    refusal = pi.wait_for("the refused reload", lambda: [
        line for line in pi.journal(*since(fresh)).splitlines() if "reload failed" in line])
    assert "model.tflite" in refusal[-1], f"the refusal does not say what was wrong: {refusal[-1]}"
    assert str(state(pi)["bundle_path"]).rstrip("/") == second.rstrip("/")
    assert pi.active_state() == "active" and pi.unit_property("NRestarts") == "0"


PROBE = r"""
import os, sys
def attempt(what, fn):
    try:
        fn()
        print(what, "ok", flush=True)
    except OSError as exc:
        print(what, "refused", exc.errno, flush=True)
def write(path):
    return lambda: open(path, "w").write("x")
for path in ["/var/lib/edgeclass/uncertain/probe", "/run/edgeclass/probe", "/var/log/edgeclass/probe", "/tmp/probe",
             "/var/lib/edgeclass/releases/probe", "/var/lib/edgeclass/probe", "/etc/edgeclass/probe",
             "/opt/edgeclass/probe", "/srv/probe", "/var/tmp/probe", "/usr/local/probe"]:
    attempt("write " + path, write(path))
attempt("read /home/pi", lambda: os.listdir("/home/pi"))
attempt("read /root", lambda: os.listdir("/root"))
attempt("read /var/lib/edgeclass/current/bundle.json", lambda: open("/var/lib/edgeclass/current/bundle.json").read())
"""


def test_the_hardening_really_applies_to_the_service(pi, fresh):
    """The unit's own sandbox, with a probe in place of ``edgeclass run`` (a drop-in replaces ExecStart only)."""
    install_release(pi)
    pi.run(["tee", "/srv/probe.py"], input=PROBE)
    pi.run(["runuser", "-u", "pi", "--", "sh", "-c", "echo secret > /home/pi/secret.txt"])
    drop_in(pi, "Type=exec\nExecStart=\nExecStart=/opt/edgeclass/venv/bin/python /srv/probe.py\nWatchdogSec=0\n"
                "Restart=no")
    pi.systemctl("start", "edgeclass", check=True)
    pi.wait_for("the probe to finish", lambda: pi.active_state() in ("inactive", "failed"), timeout=30)
    lines = [e["MESSAGE"] for e in journal_json(pi, *since(fresh)) if e.get("SYSLOG_IDENTIFIER") == "python"]
    outcome = {" ".join(line.split()[:2]): line.split()[2] for line in lines if len(line.split()) >= 3}
    allowed = {"write /var/lib/edgeclass/uncertain/probe", "write /run/edgeclass/probe",
               "write /var/log/edgeclass/probe", "write /tmp/probe", "write /var/tmp/probe",
               "read /var/lib/edgeclass/current/bundle.json"}
    assert len(outcome) == 14, lines
    for what, verdict in outcome.items():
        assert verdict == ("ok" if what in allowed else "refused"), f"{what}: {verdict} ({lines})"
    for private in ("/tmp/probe", "/var/tmp/probe"):  # PrivateTmp: the service's own, gone with it
        assert pi.run(["test", "-e", private], check=False).returncode != 0, f"{private} is in the system's tmp"


def test_setup_pi_again_upgrades_in_place_and_restarts_the_running_service(pi, fresh):
    """Over an install made by hand: the venv is kept, edgeclass's files are replaced, the service restarted."""
    release = install_release(pi)
    pi.systemctl("start", "edgeclass", check=True)
    runs_on(pi, release)
    pid = pi.unit_property("MainPID")
    module = pi.run(["/opt/edgeclass/venv/bin/python", "-c",
                     "import edgeclass.device.bench as m; print(m.__file__)"]).stdout.strip()
    pi.run(["rm", module])  # a file the upgrade must bring back
    result = subprocess.run(["edgeclass", "setup-pi", pi.host], env=pi.env(), capture_output=True, text=True,
                            timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "venv      /opt/edgeclass/venv exists" in result.stdout
    assert "apt       python3-venv is installed" in result.stdout
    assert pi.run(["test", "-f", module], check=False).returncode == 0, "the upgrade did not replace edgeclass's files"
    pi.wait_for("the restarted service", lambda: pi.unit_property("MainPID") not in ("0", pid), timeout=60)
    runs_on(pi, release)
    assert pi.active_state() == "active"
