"""Fixtures for the rehearsal Pi: real systemd in a systemd-nspawn container, reached over real ssh.

Two containers per session, both from the same cached bookworm root:

* ``bare_pi``: what a Pi owner starts from (Debian, sshd, user ``pi`` with
  passwordless sudo, no venv, no edgeclass); the README's Pi guide runs on it
  (test_guide.py), starting with ``edgeclass setup-pi``;
* ``installed_pi``: edgeclass put there with the guide's manual steps, for
  the tests of systemd's behaviour (test_systemd.py), each of which sets the
  unit up the way it needs.

The camera is the one thing replaced: a looping, real-time paced video file
(``[source] loop`` and ``realtime``), as on a Pi whose camera is not there yet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .container import REPO, PiContainer, cached_root, cannot_run_reason
from .guide import guide_commands

PIP_CACHE = Path(os.environ.get("EDGECLASS_TEST_CACHE", "/var/cache/edgeclass-test")) / "pip-cache"
REHEARSAL_VIDEO = "/srv/rehearsal/camera.avi"  # outside /home (ProtectHome) and /tmp (PrivateTmp)


@pytest.fixture(scope="session")
def pi_root() -> Path:
    """The cached bookworm root; skip when nspawn cannot run here, fail when the root cannot be built."""
    reason = cannot_run_reason()
    if reason is not None:
        if os.environ.get("EDGECLASS_REHEARSAL") == "required":  # .ci/run on a machine that can run it
            pytest.fail(f"no rehearsal Pi, and EDGECLASS_REHEARSAL=required: {reason}")
        pytest.skip(f"no rehearsal Pi: {reason}")
    return cached_root()


@pytest.fixture(scope="session")
def pi_factory(pi_root, tmp_path_factory):
    """Boot containers on demand; all are shut down at the end of the session."""
    booted: list[PiContainer] = []

    def boot(label: str) -> PiContainer:
        name = f"ec-{label}-{os.getpid()}"
        # Short: ssh's control socket lives under the harness's TMPDIR, and unix socket paths are limited.
        work = tmp_path_factory.mktemp(f"pi-{label}")
        container = PiContainer(pi_root, work, name, pip_cache=PIP_CACHE)
        booted.append(container)
        return container.boot()

    yield boot
    for container in booted:
        container.stop()


@pytest.fixture(scope="session")
def bare_pi(pi_factory) -> PiContainer:
    return pi_factory("guide")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout (or of EDGECLASS_REHEARSAL_SOURCE, to rehearse another version of the device side)."""
    out = tmp_path_factory.mktemp("wheel")
    source = Path(os.environ.get("EDGECLASS_REHEARSAL_SOURCE", REPO))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("edgeclass-*.whl"))


@pytest.fixture(scope="session")
def installed_pi(pi_factory, wheel, camera_video) -> PiContainer:
    """A container with edgeclass in /opt/edgeclass/venv and the service installed (the README's manual steps)."""
    pi = pi_factory("systemd")
    staged = pi.root_path(f"/home/pi/{wheel.name}")
    shutil.copyfile(wheel, staged)
    pi.run(["chown", "pi:pi", f"/home/pi/{wheel.name}"])
    for command in manual_install_commands(wheel.name):
        pi.ssh(command)
    put_camera_video(pi, camera_video)
    return pi


def manual_install_commands(wheel_name: str) -> list[str]:
    """The README's manual install, the commands run on the Pi (apt's python3-picamera2 left out: Debian has none)."""
    commands = guide_commands()
    first = commands.index("sudo apt install -y python3-venv")
    last = commands.index("sudo /opt/edgeclass/venv/bin/edgeclass service install", first)
    manual = [c for c in commands[first:last + 1] if "python3-picamera2" not in c]
    assert any(wheel_name in c for c in manual), f"the README's manual install does not name {wheel_name}"
    return manual


@pytest.fixture(scope="session")
def camera_video(tmp_path_factory) -> Path:
    """The rehearsal's camera: 2 s of red, green and blue frames (replayed in a loop)."""
    from tests.device.conftest import colour_frame, write_video

    frames = [colour_frame(name, seed=i) for name in ("red", "green", "blue") for i in range(20)]
    return write_video(tmp_path_factory.mktemp("camera") / "camera.avi", frames, fps=30.0)


def put_camera_video(pi: PiContainer, video: Path, where: str = REHEARSAL_VIDEO) -> None:
    pi.run(["mkdir", "-p", str(Path(where).parent)])
    shutil.copyfile(video, pi.root_path(where))
    pi.run(["chmod", "0644", where])


@pytest.fixture(scope="session")
def colour_bundle(tmp_path_factory) -> Path:
    """The tiny red/green/blue classifier as a bundle, written by ``edgeclass bundle create`` under umask 077."""
    from tests.device.tinymodel import write_colour_classifier

    work = tmp_path_factory.mktemp("bundle")
    model, labels = write_colour_classifier(work)
    out = work / "colours"
    old = os.umask(0o077)  # a careful user's umask: the bundle must still be readable by the service user
    try:
        result = subprocess.run([sys.executable, "-m", "edgeclass.device.cli", "bundle", "create", "--model", str(model),
                                 "--labels", str(labels), "--output", str(out)], capture_output=True, text=True,
                                timeout=120)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    return out
