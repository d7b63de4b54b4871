"""edgeclass deploy over a real OpenSSH server started by the test on 127.0.0.1.

The "Pi" is this machine: sshd runs (as this user) with a test-made config,
host key and authorized key on a free port above 1024; the deploy runs the
real ``ssh``/``scp`` clients and the device side is the real installed
``edgeclass`` (``bundle install``, ``service status``, ``bundle rollback``).
What is simulated is only the systemd service itself: ``--reload-command``
runs a small script that does what the run loop does on SIGHUP (load and
verify ``current``, then write the state file with the bundle it now runs),
because systemd cannot run services in this container.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cli_helpers import _MAIN, edgeclass
from .service_fixtures import bundles  # noqa: F401  (fixture)

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
needs_ssh = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("scp") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server/client not installed (Debian: apt-get install -y --no-install-recommends openssh-server)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway sshd on 127.0.0.1:<free port>; yields the ssh client options for deploy."""
    work = tmp_path_factory.mktemp("sshd")
    privsep = Path("/run/sshd")  # compiled-in privilege separation directory of Debian's sshd
    if not privsep.is_dir():
        if os.geteuid() != 0:
            pytest.skip(f"{privsep} is missing and only root can create it; sshd refuses to start without it")
        privsep.mkdir(mode=0o755, parents=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    shutil.copy(work / "client_key.pub", work / "authorized_keys")
    port = _free_port()
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    (work / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
AuthorizedKeysFile {work}/authorized_keys
PidFile {work}/sshd.pid
AllowUsers {user}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    # Pin the host key: the client checks it for real (StrictHostKeyChecking=yes).
    host_pub = (work / "host_key.pub").read_text().split()
    (work / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    log = open(work / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(work / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {(work / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail(f"sshd did not listen on port {port}: {(work / 'sshd.log').read_text()}")
            time.sleep(0.05)
    args = ["-p", str(port), "-i", str(work / "client_key"), "--ssh-config", "none",
            "-o", f"UserKnownHostsFile={work}/known_hosts", "-o", "StrictHostKeyChecking=yes"]
    yield {"host": f"{user}@127.0.0.1", "args": args, "work": work}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def remote_edgeclass(tmp_path_factory) -> str:
    """The device's edgeclass: the installed script, or (until device/cli.py registers the
    service commands) a two-line wrapper that registers them and runs the same main()."""
    script = Path(sys.executable).parent / "edgeclass"
    probe = subprocess.run([str(script), "service", "--help"], capture_output=True, timeout=60) if script.is_file() else None
    if probe is not None and probe.returncode == 0:
        return str(script)
    wrapper = tmp_path_factory.mktemp("bin") / "edgeclass"
    wrapper.write_text(f"#!{sys.executable}\n{_MAIN}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


FAKE_RELOAD = """\
import os, sys
from edgeclass.device.bundle import load_bundle
from edgeclass.device.service.state import write_state
root, state_file, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
refuse = sys.argv[4] if len(sys.argv) > 4 else None
path = os.path.realpath(os.path.join(root, "current"))
bundle = load_bundle(path)
if refuse and refuse in bundle.name:
    print(f"hot reload failed for {bundle.name}: keeping the old model", file=sys.stderr)
    sys.exit(0)  # like the run loop: the old model keeps running, so the state is unchanged
write_state(state_file, {"pid": pid, "started_at": 0.0, "fps": 12.0, "frames": 3, "label": "x",
                         "last_error": None, "bundle_name": bundle.name, "bundle_path": path})
"""


@pytest.fixture()
def device(tmp_path):
    """The device's directories and the simulated service reload."""
    script = tmp_path / "fake_reload.py"
    script.write_text(FAKE_RELOAD)
    root, state = tmp_path / "var-lib-edgeclass", tmp_path / "state.json"

    def reload(refuse: str | None = None) -> str:
        cmd = [sys.executable, str(script), str(root), str(state), str(os.getpid())] + ([refuse] if refuse else [])
        return " ".join(cmd)

    return {"root": root, "state": state, "reload": reload}


def _deploy(sshd, remote, device, bundle, *extra, reload=None, timeout="20"):
    return edgeclass("deploy", bundle, sshd["host"], *sshd["args"], "--root", device["root"], "--state-file", device["state"],
                     "--remote-edgeclass", remote, "--as-user", "", "--reload-command", reload or device["reload"](),
                     "--timeout", timeout, "--keep", "3", *extra)


def _uploads() -> set[Path]:
    return set(Path("/tmp").glob("edgeclass-deploy.*"))


@needs_ssh
def test_deploy_healthy_then_rollbacks(sshd, remote_edgeclass, device, bundles):
    """One device, four deploys: first release, an upgrade, a bundle the service refuses, a failing reload."""
    root = device["root"]
    uploads = _uploads()

    first = _deploy(sshd, remote_edgeclass, device, bundles["v1"])
    assert first.returncode == 0, first.stderr
    assert "(first release)" in first.stdout and "healthy on " in first.stdout

    second = _deploy(sshd, remote_edgeclass, device, bundles["v2"])
    assert second.returncode == 0, second.stderr
    good = os.path.realpath(root / "current")
    assert Path(good).name.startswith("mobilenet-v2-")
    assert json.loads(device["state"].read_text())["bundle_path"] == good
    assert f"healthy on {good}" in second.stdout

    # The service refuses the new bundle on reload and keeps running the old
    # one: deploy must see it never runs the new release, roll back, say so.
    refused = _deploy(sshd, remote_edgeclass, device, bundles["v1"], reload=device["reload"](refuse="mobilenet-v1"), timeout="2")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "not healthy (the service still runs " in refused.stdout
    assert refused.stderr.startswith(f"error: {sshd['host']}: mobilenet-v1-")
    assert f"did not become healthy (the service still runs {good}, after 2 s); rolled back to {Path(good).name}, healthy again" in refused.stderr
    assert os.path.realpath(root / "current") == good

    # "systemctl reload" itself fails (e.g. the unit is stopped) while the new release is current.
    flaky = f'case "$(readlink {root}/current)" in *mobilenet-v1*) exit 3;; esac; {device["reload"]()}'
    failed = _deploy(sshd, remote_edgeclass, device, bundles["v1"], reload=flaky, timeout="5")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "did not become healthy (reload failed with exit 3: no output)" in failed.stderr
    assert os.path.realpath(root / "current") == good
    assert json.loads(device["state"].read_text())["bundle_path"] == good

    assert _uploads() <= uploads, "the temporary upload directories were not removed on the host"
    assert not list(Path("/tmp").glob("ec-ssh-*/*")), "the ssh control socket was left behind"


@needs_ssh
def test_remote_install_failure_leaves_device_untouched(sshd, device, bundles):
    result = _deploy(sshd, "/nonexistent/bin/edgeclass", device, bundles["v1"])
    assert result.returncode == 2
    assert "could not install and verify the bundle (exit 127)" in result.stderr
    assert not (device["root"] / "current").exists()


def test_dry_run_prints_the_plan_without_connecting(bundles, tmp_path):
    result = edgeclass("deploy", bundles["v1"], "pi@raspberrypi.invalid", "--dry-run", "-p", "2222", "-i", __file__)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"deploy mobilenet-v1 ({bundles['v1']}) to pi@raspberrypi.invalid:/var/lib/edgeclass\n")
    assert "would: copy the bundle: scp -r -q -P 2222 -i " in out
    assert ("sudo -n -u edgeclass /opt/edgeclass/venv/bin/edgeclass bundle install "
            "/tmp/edgeclass-deploy.XXXXXX/v1 --root /var/lib/edgeclass --keep 3 --json") in out
    assert "would: reload the service: ssh -p 2222" in out and "'sudo -n systemctl reload edgeclass'" in out
    assert "/opt/edgeclass/venv/bin/edgeclass bundle rollback --root /var/lib/edgeclass --json" in out
    assert len([line for line in out.splitlines() if line.startswith("would: ")]) == 7


def test_damaged_bundle_never_leaves_the_workstation(bundles):
    result = edgeclass("deploy", bundles["damaged"], "pi@raspberrypi.invalid")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "model.tflite: sha256 is" in result.stderr
    assert "raspberrypi.invalid" not in result.stdout.replace("to pi@raspberrypi.invalid", "")
