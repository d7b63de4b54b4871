"""service install (dry run and a real install under a temporary --prefix), state file and service status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeclass.device.service.config import build, read_config_file
from edgeclass.device.service.health import check_health
from edgeclass.device.service.install import render_unit
from edgeclass.device.service.state import StateError, read_state, write_state

from .cli_helpers import cli_app, edgeclass  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_render_unit_substitutes_user_and_exec():
    text = render_unit("camuser", "/srv/ec/bin/edgeclass")
    assert "\nUser=camuser\n" in text and "\nGroup=camuser\n" in text
    assert "\nExecStart=/srv/ec/bin/edgeclass run --config /etc/edgeclass/device.toml\n" in text
    # (that nothing else changes, and that the wheel ships systemd/'s bytes: test_unit.py)


def test_dry_run_prints_every_action_and_changes_nothing(cli_app, tmp_path):
    result = runner.invoke(cli_app, ["service", "install", "--dry-run", "--prefix", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"would: mkdir {tmp_path}/etc/edgeclass" in out
    assert f"would: write {tmp_path}/etc/systemd/system/edgeclass.service (User=edgeclass" in out
    assert f"would: write {tmp_path}/etc/edgeclass/device.toml (commented defaults)" in out
    assert "skip: create system user 'edgeclass'" in out
    assert "skip: systemctl daemon-reload, systemctl enable edgeclass.service" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_for_the_real_system_shows_useradd_and_systemctl(cli_app):
    """--prefix / with --dry-run: what a Pi would run (nothing is executed here).

    The user does not exist, so the unit this would write differs from any
    installed one: "write" where none is installed, "update" where one is.
    """
    result = runner.invoke(cli_app, ["service", "install", "--dry-run", "--user", "edgeclass-test-nobody",
                                     "--operator", ""])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("would: run: useradd --system --user-group --home-dir /var/lib/edgeclass --no-create-home")
    assert lines[0].endswith(" edgeclass-test-nobody")
    unit = Path("/etc/systemd/system/edgeclass.service")
    verb = "update" if unit.exists() else "write"
    assert (f"would: {verb} {unit} (User=edgeclass-test-nobody, ExecStart=/opt/edgeclass/venv/bin/edgeclass "
            "run --config /etc/edgeclass/device.toml)") in lines
    assert "would: run: systemctl daemon-reload" in lines
    assert "would: run: systemctl enable edgeclass.service" in lines
    assert not any("usermod" in line for line in lines)  # --operator '': nobody added
    assert lines[-1].startswith("next: sudo systemctl start edgeclass (it waits for a first bundle)")


def test_install_adds_the_sudo_user_to_the_service_group_to_read_saved_frames(cli_app, monkeypatch):
    """The person who ran `sudo edgeclass service install` sorts the saved frames: they join the group."""
    import pwd

    person = pwd.getpwuid(65534).pw_name  # exists everywhere ("nobody"); nothing is executed in a dry run
    monkeypatch.setenv("SUDO_USER", person)
    result = runner.invoke(cli_app, ["service", "install", "--dry-run", "--user", "edgeclass-test-nobody"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"would: run: usermod --append --groups edgeclass-test-nobody {person}" in lines
    assert any(line.startswith(f"note: {person} reads /var/lib/edgeclass/uncertain and /var/log/edgeclass without "
                               "sudo from their next login") for line in lines)
    monkeypatch.setenv("SUDO_USER", "root")  # plain root: nobody to add
    assert "usermod" not in runner.invoke(cli_app, ["service", "install", "--dry-run", "--user",
                                                    "edgeclass-test-nobody"]).output
    refused = runner.invoke(cli_app, ["service", "install", "--dry-run", "--operator", "no-such-login-xyz"])
    assert refused.exit_code != 0 and "--operator no-such-login-xyz: no such user" in str(refused.exception)


def test_install_under_prefix_writes_files_and_is_idempotent(cli_app, tmp_path):
    first = runner.invoke(cli_app, ["service", "install", "--prefix", str(tmp_path), "--user", "camuser"])
    assert first.exit_code == 0, first.output
    unit = tmp_path / "etc/systemd/system/edgeclass.service"
    config = tmp_path / "etc/edgeclass/device.toml"
    assert "\nUser=camuser\n" in unit.read_text()
    assert config.read_text() == (REPO / "systemd" / "device.toml").read_text()
    assert (tmp_path / "var/lib/edgeclass/releases").is_dir()
    assert build(read_config_file(config)).model.bundle == Path("/var/lib/edgeclass/current")
    assert oct(unit.stat().st_mode & 0o777) == "0o644"

    config.write_text(config.read_text().replace("threshold = 0.5", "threshold = 0.7"))  # the user's edit
    second = runner.invoke(cli_app, ["service", "install", "--prefix", str(tmp_path), "--user", "camuser"])
    assert second.exit_code == 0, second.output
    assert f"unchanged: {unit}" in second.output
    assert f"keep: {config} (exists; never overwritten)" in second.output
    assert "would:" not in second.output and "write" not in second.output.replace("overwritten", "")
    assert build(read_config_file(config)).decision.threshold == 0.7


def test_install_on_the_system_needs_root_or_dry_run():
    """As a normal user (root here drops to 'nobody' with setpriv), the real install refuses, by name."""
    import shutil
    import subprocess
    import sys

    from .cli_helpers import _MAIN

    argv = [sys.executable, "-c", _MAIN, "service", "install"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot try the install as a normal user")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("error: service install writes /etc and creates a user: "
                             "run it with sudo (or add --dry-run to see the plan)\n")


# ---------------------------------------------------------------- state and status


def _state(**overrides) -> dict:
    now = time.time()
    state = {"pid": os.getpid(), "started_at": now - 3700, "updated_at": now, "fps": 14.8, "label": "daisy",
             "frames": 1820, "last_error": None, "bundle_name": "flowers-v3", "bundle_path": "/var/lib/edgeclass/releases/x"}
    state.update(overrides)
    return state


def test_state_roundtrip_is_atomic_and_world_readable(tmp_path):
    path = tmp_path / "state.json"
    write_state(path, {"pid": 1, "frames": 0})
    data = read_state(path)
    assert data["pid"] == 1 and isinstance(data["updated_at"], float)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    write_state(path, _state())
    assert read_state(path)["label"] == "daisy"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary files left


def test_read_state_errors_name_the_file(tmp_path):
    with pytest.raises(StateError, match=r"nope\.json: no state file"):
        read_state(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"pid": ')
    with pytest.raises(StateError, match=r"bad\.json: not valid JSON"):
        read_state(bad)


def test_health_rules():
    assert check_health(_state()).healthy
    now = time.time()
    stale = check_health(_state(updated_at=now - 60), now=now)
    assert not stale.healthy and stale.problems == ("state is 60 s old (more than 15 s): the frame loop is not running",)
    assert "is not running" in check_health(_state(pid=2 ** 22 + 12345)).problems[0]
    assert check_health(_state(frames=0)).problems == ("no frames classified yet",)
    assert check_health(_state(fps=0.0)).problems == ("0 fps: frames are not arriving",)
    assert check_health(_state(last_error="camera reopened")).healthy  # reported, not judged
    assert check_health(None, missing="x: no state file").problems == ("x: no state file",)


def test_status_command(cli_app, tmp_path):
    path = tmp_path / "state.json"
    write_state(path, _state())
    ok = runner.invoke(cli_app, ["service", "status", "--state-file", str(path)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("edgeclass: healthy\n")
    assert "14.8 fps, 1820 frames, label daisy" in ok.output and "up 1h 1m" in ok.output

    as_json = runner.invoke(cli_app, ["service", "status", "--json", "--state-file", str(path)])
    data = json.loads(as_json.output)
    assert data["healthy"] is True and data["state"]["bundle_name"] == "flowers-v3"

    write_state(path, _state(updated_at=time.time() - 100))
    stale = runner.invoke(cli_app, ["service", "status", "--state-file", str(path)])
    assert stale.exit_code == 1 and "NOT healthy" in stale.output and "problem: state is 100 s old" in stale.output

    missing = runner.invoke(cli_app, ["service", "status", "--json", "--state-file", str(tmp_path / "none.json")])
    assert missing.exit_code == 1
    assert json.loads(missing.output)["problems"][0].endswith("none.json: no state file (the service is not running, "
                                                              "or uses another [service] state_file)")
