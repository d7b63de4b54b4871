"""systemd/edgeclass.service: what it promises, what systemd's own checkers say, and what is installed.

The packaged copy (``device/service/data``) is a symlink to ``systemd/`` in the
source tree, so comparing the two there proves nothing; the wheel is what a
Pi gets, so the wheel is built and read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edgeclass.service"
EXEC = "/opt/edgeclass/venv/bin/edgeclass"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (Debian: apt-get install systemd)")


def _settings(text: str) -> dict[str, list[str]]:
    """Unit settings as {key: [values...]} (keys may repeat, unlike configparser's model)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_settings():
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{EXEC} run --config /etc/edgeclass/device.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"] and "WatchdogSec" in s and "RestartSec" in s
    assert "StartLimitIntervalSec" in s and "StartLimitBurst" in s
    assert s["User"] == ["edgeclass"] and "video" in s["SupplementaryGroups"][0].split()
    for flag in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[flag] == ["yes"], flag
    assert s["ProtectSystem"] == ["strict"]
    assert s["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert allowed == {"char-video4linux", "char-media", "char-dma_heap", "char-vchiq", "char-usb_device", "char-apex"}


@needs_analyze
def test_verify_prints_nothing(tmp_path):
    """``systemd-analyze verify --man=no`` must print nothing at all (several mistakes only warn, exit 0).

    verify also checks that ExecStart exists, and /opt/edgeclass/venv is a Pi
    path; so we verify a copy whose only change is ExecStart pointing at this
    environment's installed edgeclass script. The first check below shows that
    this is the *only* thing verify says about the original unit.
    """
    original = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True, timeout=60)
    if not Path(EXEC).exists():
        assert original.stdout == ""
        assert original.stderr.strip() == f"edgeclass.service: Command {EXEC} is not executable: No such file or directory"

    script = Path(sys.executable).parent / "edgeclass"
    if not script.is_file():
        pytest.skip(f"{script}: the edgeclass console script is not installed next to {sys.executable}")
    copy = tmp_path / "edgeclass.service"
    text = UNIT.read_text()
    assert text.count(EXEC) == 1
    copy.write_text(text.replace(EXEC, str(script)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
def test_security_exposure_is_ok():
    """``systemd-analyze security --offline=yes``: overall exposure 2.0 or lower ("OK")."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (needs systemd 250+)")
    match = re.search(r"Overall exposure level for edgeclass\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    score, verdict = float(match.group(1)), match.group(2)
    assert score <= 2.0 and verdict in ("OK", "SAFE"), f"exposure {score} {verdict}"


def test_the_service_cannot_rewrite_its_own_releases():
    """Fault: StateDirectory=edgeclass made releases/ and `current` writable by the service itself.

    Now /var/lib/edgeclass is read-only inside the unit, and the only writable
    place under it is the uncertain-frames folder. (`bundle install`, run by
    deploy as `sudo -u edgeclass`, is outside the unit's namespace and keeps
    writing releases.) The defaults agree: the releases root deploy uses is the
    read-only one, and [model] bundle points into it.
    """
    from edgeclass.device.pipeline.config import ModelConfig

    s = _settings(UNIT.read_text())
    assert s["ReadOnlyPaths"] == ["/var/lib/edgeclass"]
    assert s["StateDirectory"] == ["edgeclass/uncertain"]  # nested inside the read-only path: writable
    writable = ["/var/lib/" + d for d in s["StateDirectory"][0].split()]
    writable += ["/run/" + d for d in s["RuntimeDirectory"][0].split()] + ["/var/log/" + d for d in s["LogsDirectory"][0].split()]
    writable += [p.lstrip("-") for v in s.get("ReadWritePaths", []) for p in v.split()]
    assert not any(p in ("/var/lib/edgeclass", "/var/lib/edgeclass/releases") for p in writable), writable
    assert ModelConfig().bundle == Path("/var/lib/edgeclass/current")
    assert _deploy_default("root") == "/var/lib/edgeclass"


def _deploy_default(name: str):
    import typer

    from edgeclass.device.cli import app

    deploy = typer.main.get_command(app).commands["deploy"]
    return next(p.default for p in deploy.params if p.name == name)


def _wheel(tmp_path: Path) -> zipfile.ZipFile:
    """The wheel a Pi installs, built offline from a copy of this checkout."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                                  ".pytest_cache", "demo-out"))
    out = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel offline here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("edgeclass-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_ships_the_unit_and_config_byte_for_byte(tmp_path):
    """What `service install` writes on a Pi comes from the wheel: it must be systemd/'s files, not symlinks."""
    with _wheel(tmp_path) as wheel:
        for name in ("edgeclass.service", "device.toml"):
            member = f"edgeclass/device/service/data/{name}"
            assert member in wheel.namelist(), sorted(n for n in wheel.namelist() if "data" in n)
            assert wheel.read(member) == (REPO / "systemd" / name).read_bytes(), name


def test_the_rendered_unit_differs_from_systemd_only_in_user_group_and_execstart():
    from edgeclass.device.service.install import render_unit

    rendered = render_unit("camuser", "/srv/ec/bin/edgeclass").splitlines()
    shipped = UNIT.read_text().splitlines()
    assert len(rendered) == len(shipped)
    changed = [(old, new) for old, new in zip(shipped, rendered) if old != new]
    assert changed == [(f"ExecStart={EXEC} run --config /etc/edgeclass/device.toml",
                        "ExecStart=/srv/ec/bin/edgeclass run --config /etc/edgeclass/device.toml"),
                       ("User=edgeclass", "User=camuser"), ("Group=edgeclass", "Group=camuser")]
