"""``edgeclass setup-pi``: the plan it prints, the wheel it builds, and its refusals (no Pi needed).

Running it against a real Debian with a real systemd is tests/pi (the README's
Pi guide and the upgrade in place).
"""

from __future__ import annotations

import zipfile

from edgeclass.device import __version__
from edgeclass.device.fleet.setup import build_wheel

from .cli_helpers import edgeclass


def test_dry_run_prints_every_step_without_connecting():
    result = edgeclass("setup-pi", "pi@raspberrypi.invalid", "--dry-run", "-p", "2222")
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("would: ")]
    texts = [line.split(":", 2)[1].strip() for line in steps]
    assert texts == [
        "build a wheel of this checkout", "create a temporary directory", "copy the wheel",
        "ask dpkg which packages are installed", "if any is missing", "install those apt has (python3-picamera2 only "
        "where the OS has it)", "unless /opt/edgeclass/venv exists, create it", "install the wheel with its device extra",
        "replace edgeclass's own files", "link /usr/local/bin/edgeclass to /opt/edgeclass/venv/bin/edgeclass",
        "install the service", "restart edgeclass if it runs", "remove the upload", "read the installed version"], texts
    out = result.stdout
    assert "pip wheel --no-deps" in out
    assert "python3 -m venv --system-site-packages /opt/edgeclass/venv" in out
    assert "/opt/edgeclass/venv/bin/pip install --quiet --root-user-action=ignore" in out
    assert "/tmp/edgeclass-setup.XXXXXX/edgeclass-VERSION-py3-none-any.whl[device]" in out
    assert "sudo -n /opt/edgeclass/venv/bin/edgeclass service install" in out
    assert all(" -- pi@raspberrypi.invalid" in line for line in steps if " ssh " in line)


def test_the_wheel_is_this_checkout_with_its_unit_and_config(tmp_path):
    wheel = build_wheel(tmp_path)
    assert wheel.name == f"edgeclass-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("edgeclass/device/fleet/setup.py", "edgeclass/device/service/data/edgeclass.service",
                   "edgeclass/device/service/data/device.toml"):
        assert needed in names, sorted(names)[:20]
    metadata = zipfile.ZipFile(wheel).read(f"edgeclass-{__version__}.dist-info/METADATA").decode()
    assert "Provides-Extra: device" in metadata


def test_a_missing_wheel_or_a_host_like_an_option_is_refused_in_one_line(tmp_path):
    missing = edgeclass("setup-pi", "pi@raspberrypi.invalid", "--wheel", tmp_path / "nope.whl")
    assert missing.returncode != 0 and missing.stderr.strip() == f"error: {tmp_path / 'nope.whl'}: no such wheel file (--wheel)"
    option = edgeclass("setup-pi", "--", "-oProxyCommand=touch /tmp/x")
    assert option.returncode != 0 and option.stderr.startswith("error: host '-oProxyCommand=touch /tmp/x'")
    assert "Traceback" not in missing.stderr + option.stderr
